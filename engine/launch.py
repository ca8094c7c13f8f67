"""The ``nst-engine`` console script: imports nothing heavy itself, so that Ctrl-C while torch and ONNX Runtime
load (a few seconds) is one line and exit code 130, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import engine.cli  # noqa: F401 - registers the commands
        from engine.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    run()
