"""Every kernels/*.cu compiles to a cubin for sm_80 and sm_90 with nvcc (warnings are errors).

Skips when nvcc is not on PATH; .ci/kernels.sh runs the same compile in CI and fails instead.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = sorted((Path(__file__).resolve().parents[1] / "kernels").glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_kernel_sources_exist():
    assert {p.name for p in KERNELS} >= {"logmel.cu", "frames.cu"}


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", KERNELS, ids=lambda p: p.name)
def test_nvcc_cubin(source, arch, tmp_path):
    out = tmp_path / f"{source.stem}.{arch}.cubin"
    run = subprocess.run([NVCC, "-cubin", f"-arch={arch}", "-std=c++14", "-Werror", "all-warnings",
                          "-o", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0
