"""The 21 offset classes: class k <-> offset -2.0 + 0.2 k seconds (positive: audio leads video)."""
import numpy as np

NUM_OFFSET_CLASSES = 21
OFFSET_GRID_SEC = np.linspace(-2.0, 2.0, NUM_OFFSET_CLASSES).astype(np.float32)
OFFSET_STEP_SEC = 0.2
IN_SYNC_CLASS = 10


def class_to_offset(k: int) -> float:
    """Offset in seconds of class index k (0..20)."""
    if not 0 <= int(k) < NUM_OFFSET_CLASSES:
        raise ValueError(f"offset class must be in 0..{NUM_OFFSET_CLASSES - 1}, got {k}")
    return round(float(OFFSET_GRID_SEC[int(k)]), 1)


def offset_to_class(offset_sec: float) -> int:
    """Nearest class index for an offset in seconds; offsets beyond +-2 s are clamped."""
    return int(np.argmin(np.abs(OFFSET_GRID_SEC - np.float32(offset_sec))))
