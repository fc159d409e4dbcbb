"""A module whose name is not a Python identifier (it has a dash): `python -m bad-name` runs it."""
