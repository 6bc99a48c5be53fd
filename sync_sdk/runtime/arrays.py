"""The array library of a backend's output (NumPy, CuPy, torch) and its conversion to NumPy."""
from __future__ import annotations

import sys

import numpy as np


def array_module(x):
    """The array library of x (numpy, cupy, torch: each has .stack and .concatenate/.cat)."""
    return sys.modules[type(x).__module__.split(".")[0]]


def to_numpy(x) -> np.ndarray:
    """A backend output (NumPy or a CuPy device array) as a NumPy array."""
    return x.get() if type(x).__module__.split(".")[0] == "cupy" else np.asarray(x)
