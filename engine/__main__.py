"""``python -m engine`` runs the ``nst-engine`` command line."""

from engine.launch import main

main()
