# Build progress in the kiln CLI: the plain '[build]' lines a log gets when stderr is not a terminal.
import re
import subprocess

from test_cli import FAST, KILN, run_kiln
from test_cli_trtexec import chain_model


def progress_lines(out):
    return [line for line in out.splitlines() if line.startswith("[build] ")]


def test_plain_progress_lines_follow_the_build_phases(tmp_path):
    model = chain_model(tmp_path / "chain.onnx")
    proc = run_kiln(f"--onnx={model}", "--shapes=x:2x8", "--device=cpu", "--verbose", *FAST, check=True)
    lines = progress_lines(proc.stdout)
    assert lines, proc.stdout
    # The verbose log has one line per pass that ran: the passes phase must count exactly those.
    passes_run = len(re.findall(r"^\[V\] pass \S+ +-?\d+ changes", proc.stderr, re.M))
    assert passes_run > 0, proc.stderr
    assert lines[0] == "[build] Building engine: started, 2 steps", lines
    assert lines[1] == f"[build]   Optimization passes: started, {passes_run} steps", lines
    assert re.fullmatch(rf"\[build\]   Optimization passes: done {passes_run}/{passes_run} in [\d.]+ s", lines[2]), lines
    assert lines[3] == "[build]   Writing engine: started", lines
    assert re.fullmatch(r"\[build\]   Writing engine: done in [\d.]+ s", lines[4]), lines
    assert re.fullmatch(r"\[build\] Building engine: done 2/2 in [\d.]+ s", lines[5]), lines
    assert len(lines) == 6, lines  # a fast build prints no intermediate step lines (at most one a second)
    # No terminal control codes in a log.
    assert "\r" not in proc.stdout and "\033" not in proc.stdout
    # The progress comes before the build summary.
    assert proc.stdout.index(lines[-1]) < proc.stdout.index("Engine built in")


def test_progress_none_and_live(tmp_path):
    model = chain_model(tmp_path / "chain.onnx")
    quiet = run_kiln(f"--onnx={model}", "--shapes=x:2x8", "--device=cpu", "--progress=none", *FAST, check=True)
    assert not progress_lines(quiet.stdout) and "[build" not in quiet.stderr
    # Forced live mode draws on stderr with carriage returns and clears the line when the build ends (read as
    # bytes: text mode would turn each \r into a newline).
    live = subprocess.run([str(KILN), f"--onnx={model}", "--shapes=x:2x8", "--device=cpu", "--progress=live", *FAST],
                          capture_output=True, timeout=300)
    assert live.returncode == 0, live.stderr
    out, err = live.stdout.decode(), live.stderr.decode()
    assert not progress_lines(out)
    assert "\r\033[K[build " in err, repr(err)
    assert re.search(r"\r\033\[K\[build [\d.]+ s\] Building engine 0/2 > Optimization passes \d+/\d+", err), repr(err)
    assert re.search(r"\r\033\[K\[build [\d.]+ s\] Building engine 1/2 > Writing engine", err), repr(err)
    assert err.endswith("\r\033[K"), repr(err)  # cleared for the summary lines that follow


def test_bad_progress_value_is_rejected(tmp_path):
    model = chain_model(tmp_path / "chain.onnx")
    proc = run_kiln(f"--onnx={model}", "--progress=fancy", check=False)
    assert proc.returncode == 2
    assert "--progress" in proc.stderr


def test_failed_build_says_where_it_stopped(tmp_path):
    model = chain_model(tmp_path / "chain.onnx")
    # A per-layer FP16 request reaches the builder, which refuses it on the CPU backend before the passes.
    proc = run_kiln(f"--onnx={model}", "--shapes=x:2x8", "--device=cpu", "--layerPrecisions=act:fp16", *FAST,
                    check=False)
    assert proc.returncode != 0
    lines = progress_lines(proc.stdout)
    assert lines and re.fullmatch(r"\[build\] Building engine: stopped at 0/2 after [\d.]+ s", lines[-1]), \
        (lines, proc.stderr)


def test_auto_mode_draws_live_on_a_terminal_and_steps_aside_for_log_lines(tmp_path):
    import os
    import pty

    model = chain_model(tmp_path / "chain.onnx")
    master, slave = pty.openpty()
    try:
        # stderr on a pseudo-terminal, stdout a pipe: auto mode draws live on stderr and prints no plain lines.
        proc = subprocess.Popen([str(KILN), f"--onnx={model}", "--shapes=x:2x8", "--device=cpu", "--verbose", *FAST],
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        out = proc.communicate(timeout=300)[0].decode()
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        err = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert proc.returncode == 0, err
    assert not progress_lines(out), out
    assert "\r\033[K[build " in err, repr(err)
    # Each verbose pass line starts on a cleared line, and the live line is drawn again after it.
    for m in re.finditer(r"\[V\] pass \S+", err):
        assert err[:m.start()].endswith("\r\033[K"), repr(err[max(0, m.start() - 80):m.end()])
    assert re.search(r"\[V\] pass [^\n]*\r?\n\r\033\[K\[build ", err), repr(err)
