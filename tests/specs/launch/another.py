"""Another support module."""
