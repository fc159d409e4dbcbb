"""A package whose name clashes with launch/helper.py."""
