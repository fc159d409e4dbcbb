"""Runtimes: python-build-standalone downloads and local interpreters, made relocatable."""
