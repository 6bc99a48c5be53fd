"""Model inputs from decoded media: log-mel and normalised frames, NumPy (CPU) and CuPy kernels (GPU)."""
