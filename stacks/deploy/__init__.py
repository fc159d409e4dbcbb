"""Deploying on a target machine: unpack, check and configure layers (standard library only)."""
