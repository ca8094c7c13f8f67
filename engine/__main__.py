"""``python -m engine`` runs the ``nst-engine`` command line."""

from nst_engine.launch import main

main()
