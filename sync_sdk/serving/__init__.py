"""Serving on top of the engine: file-list batches, DeSync and feature extraction over folders, the Ray
Data job, `sync-sdk serve` (a Triton server through PyTriton), the Triton model repository."""
