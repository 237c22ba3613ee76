"""kiln.IProgressMonitor subclasses see the build's phases and steps, and can cancel the build."""
import pytest

import kiln as trt


class Recorder(trt.IProgressMonitor):
    def __init__(self, cancel_at=None, raise_in=None):
        trt.IProgressMonitor.__init__(self)
        self.events, self.open = [], []
        self.cancel_at, self.raise_in, self.steps = cancel_at, raise_in, 0

    def phase_start(self, phase_name, parent_phase, num_steps):
        assert parent_phase == (self.open[-1] if self.open else None)
        self.open.append(phase_name)
        self.events.append(("start", phase_name, num_steps))

    def step_complete(self, phase_name, step):
        self.events.append(("step", phase_name, step))
        self.steps += 1
        if self.raise_in == "step_complete":
            raise RuntimeError("monitor bug")
        return self.steps != self.cancel_at

    def phase_finish(self, phase_name):
        assert self.open.pop() == phase_name
        self.events.append(("finish", phase_name))


def build(monitor):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network()
    x = network.add_input("x", trt.float32, (2, 4))
    network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU
    config.progress_monitor = monitor
    assert config.progress_monitor is monitor
    return builder.build_serialized_network(network, config)


def test_monitor_sees_phases_and_one_step_per_pass():
    m = Recorder()
    assert build(m).nbytes > 0
    assert m.events[0] == ("start", "Building engine", 2)
    start, name, passes = m.events[1]
    assert (start, name) == ("start", "Optimization passes") and passes > 1
    steps = [e for e in m.events if e[:2] == ("step", "Optimization passes")]
    assert [e[2] for e in steps] == list(range(passes))
    assert m.events[-1] == ("finish", "Building engine") and not m.open


def test_returning_false_cancels_the_build():
    m = Recorder(cancel_at=1)
    with pytest.raises(trt.KilnError, match="cancelled by its progress monitor"):
        build(m)
    assert m.steps == 1 and not m.open  # every phase was finished


def test_exception_in_step_complete_cancels_and_is_reported(recwarn):
    m = Recorder(raise_in="step_complete")
    with pytest.raises(trt.KilnError, match="cancelled"):
        build(m)
    assert not m.open


def test_progress_monitor_type_is_checked():
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(TypeError, match="kiln.IProgressMonitor"):
        config.progress_monitor = object()
    config.progress_monitor = None
    assert config.progress_monitor is None
