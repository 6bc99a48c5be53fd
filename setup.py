"""Packaging for sync-sdk: the runtime needs numpy, av and onnxruntime; torch only for export/training."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "sync_sdk" / "version.py").read_text(), version)



class BuildPyWithKernels(build_py):
    """Also copy the repo-root kernels/*.cu into the built package as sync_sdk/kernels/*.cu."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "sync_sdk" / "kernels"
        dst.mkdir(parents=True, exist_ok=True)
        for src in sorted((ROOT / "kernels").glob("*.cu")):
            self.copy_file(str(src), str(dst / src.name))


TORCH = "torch==2.13.0"
RAY = ["ray[data]==2.60.0", "pyarrow==26.0.1"]
# Debian's python3.11 only (scripts/triton_env.sh); not in dev: tritonclient's protobuf / ml_dtypes pins clash
SERVE = ["nvidia-pytriton==0.6.0", "tritonclient[http,grpc]==2.73.0"]
EXPORT = [TORCH, "onnx==1.23.2", "onnxscript==0.7.2", "onnxruntime==1.32.0", "onnxconverter-common==1.16.0"]

setup(
    name="sync-sdk",
    version=version["__version__"],
    description="Fast inference SDK for Synchformer audio-visual synchronisation",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sync_sdk", "sync_sdk.*"]),
    package_data={"sync_sdk": ["models/*/*", "models/*/*/*"]},
    cmdclass={"build_py": BuildPyWithKernels},
    install_requires=[
        "numpy>=1.24",
        "av==18.1.0",
        "onnxruntime==1.32.0",
        "safetensors==0.8.0",
        "tqdm==4.70.1",
    ],
    extras_require={
        "torch": [TORCH],
        "export": EXPORT,
        "plot": ["matplotlib==3.11.2"],
        "train": [TORCH, "matplotlib==3.11.2"],
        "ray": RAY,
        "serve": SERVE,
        "gpu": ["cupy-cuda12x==14.2.0", "tensorrt==11.4.0.106"],
        "dev": EXPORT + RAY + ["matplotlib==3.11.2", "pytest==9.0.3", "ruff==0.17.6", "import-linter==2.17"],
    },
    entry_points={"console_scripts": ["sync-sdk=sync_sdk.cli.main:main"]},
)
