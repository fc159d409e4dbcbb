"""A module whose name `python -m` cannot import (it has a dash)."""
