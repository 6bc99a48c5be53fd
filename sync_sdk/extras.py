"""Optional dependencies: import one, or fail with the `pip install 'sync-sdk[EXTRA]'` that brings it."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from sync_sdk.errors import MissingDependencyError


def require_module(module: str, extra: str, what: str) -> ModuleType:
    """`module` imported, or MissingDependencyError: "{what} needs {module}: pip install 'sync-sdk[{extra}]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                                     f"pip install 'sync-sdk[{extra}]'") from e


def has_module(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
