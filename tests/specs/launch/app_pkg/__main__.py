"""A launch package: `python -m app_pkg`."""
