"""``python -m core`` runs the ``inlet`` CLI (used by tests to start the supervisor as a subprocess)."""

from core.cli import main

main()
