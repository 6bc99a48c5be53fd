"""Shared fixtures: where the reference material lives (skips cleanly when it is absent)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def reference_dir(env: str, default: Path) -> Path:
    """Folder from the environment variable `env`, else `default`; skip the test when missing."""
    path = Path(os.environ.get(env, default))
    if not path.is_dir():
        pytest.skip(f"reference folder {path} not found (set {env} or lay ../shared beside the repo)")
    return path


@pytest.fixture
def tiny_reference_dir() -> Path:
    return reference_dir("SYNC_SDK_REFERENCE", SHARED / "reference" / "tiny_seed0")


@pytest.fixture
def preproc_reference_dir() -> Path:
    return reference_dir("SYNC_SDK_PREPROC_REFERENCE", SHARED / "reference" / "preproc")


@pytest.fixture
def reference_root() -> Path:
    return reference_dir("SYNC_SDK_REFERENCE_ROOT", SHARED / "reference")
