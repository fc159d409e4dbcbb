"""Publishing: byte-reproducible layer archives, their metadata, and local exports."""
