"""Backends: one file per runtime behind the small protocol of `base.Backend`."""
from .base import Backend

__all__ = ["Backend"]
