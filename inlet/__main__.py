"""``python -m inlet`` runs the ``inlet`` CLI (used by tests to start the supervisor as a subprocess)."""

from inlet.core.cli import main

main()
