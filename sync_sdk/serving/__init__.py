"""Serving on top of the engine: file-list batches, the Ray Data job, the Triton model repository."""
