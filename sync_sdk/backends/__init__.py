"""Backends: one file per runtime behind the small protocol of `base.Backend`."""
from sync_sdk.backends.base import Backend

__all__ = ["Backend"]
