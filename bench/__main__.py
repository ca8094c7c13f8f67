"""``python -m bench [OPTIONS]``: the same as ``nst-engine bench [OPTIONS]``."""

import sys

from engine.cli import main

main(["bench", *sys.argv[1:]])
