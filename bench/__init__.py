"""stacks' benchmark suite (`python -m bench`, `make bench`) and its helpers."""
