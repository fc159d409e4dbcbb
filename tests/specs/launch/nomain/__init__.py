"""A package without __main__.py, so `python -m nomain` cannot run it."""
