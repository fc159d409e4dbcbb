"""The pipeline: every step of every layer as a doit task, its stamps, and the engine that runs them."""
