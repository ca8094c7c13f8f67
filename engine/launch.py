"""The ``nst-engine`` console script: imports nothing heavy itself, so that Ctrl-C while torch and ONNX Runtime
load (a few seconds) is one line and exit code 130, not a traceback."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    # During the imports Ctrl-C is only noted: a KeyboardInterrupt raised inside a library's import can be
    # swallowed there (the run would then go on) or leave a half-imported module behind.
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        import nst_engine.cli  # noqa: F401 - registers the commands
        from nst_engine.cli.app import main as run
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    run()
