"""A package whose name clashes with launch/empty.py."""
