"""The runtime modules import with torch made unimportable."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNTIME_MODULES = ["sync_sdk", "sync_sdk.config", "sync_sdk.geometry", "sync_sdk.errors", "sync_sdk.backends",
                   "sync_sdk.weights.state_dict_rules"]


def _run(code: str) -> subprocess.CompletedProcess:
    blocked = "import sys; sys.modules['torch'] = None; " + code
    return subprocess.run([sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True)


def test_runtime_imports_without_torch():
    code = "import importlib; " + "; ".join(f"importlib.import_module({m!r})" for m in RUNTIME_MODULES)
    code += "; assert 'torch' not in {k for k, v in sys.modules.items() if v is not None}"
    result = _run(code)
    assert result.returncode == 0, result.stderr


def test_blocking_is_effective():
    """The same subprocess set-up does fail on the torch model, so the check above can fail."""
    result = _run("import sync_sdk.model")
    assert result.returncode != 0 and "torch" in result.stderr
