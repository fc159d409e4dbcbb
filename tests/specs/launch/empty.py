"""A launch module that does nothing."""
