"""``python -m engine`` runs the ``nst-engine`` command line."""

from engine.cli import main

main()
