"""Makes `import kiln` find the build tree (KILN_BUILD, default build/) unless KILN_USE_INSTALLED is set."""
import os
import pathlib
import sys

import pytest

if not os.environ.get("KILN_USE_INSTALLED"):
    _build = pathlib.Path(os.environ.get("KILN_BUILD", pathlib.Path(__file__).resolve().parents[2] / "build"))
    sys.path.insert(0, str(_build.resolve() / "python"))


@pytest.fixture
def logger():
    """A Python ILogger subclass that records every message."""
    import kiln

    class Recorder(kiln.ILogger):
        def __init__(self):
            kiln.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, msg):
            self.messages.append((severity, msg))

    return Recorder()
