"""Developer and test tooling that is not part of the shipped `inlet` distribution (see tools/services.py)."""
