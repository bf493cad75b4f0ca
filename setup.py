"""Packaging for jetsplit.

The top-level folders are the system's parts (edge/, cloud/, protocol/, ...), so the
repository layout shows the architecture; here they are installed under one
namespace, ``jetsplit.edge``, ``jetsplit.cloud``, ... so nothing lands in
site-packages under a generic name such as ``protocol``.
"""

from setuptools import setup

_PARTS = ["edge", "cloud", "protocol", "calibration", "tools"]
# Not listed, so not installed: tools/zoo (jetsplit.tools.zoo), the torch build-time
# tool behind `make zoo`, which runs it from the source tree (editable install).

_packages = [
    "jetsplit",
    "jetsplit.engines",
    "jetsplit.cli",
    "jetsplit.demo",
    "jetsplit.edge.power",
    "jetsplit.edge.pool",
] + [f"jetsplit.{part}" for part in _PARTS]

_package_dir = {"jetsplit": "jetsplit"}
_package_dir.update({f"jetsplit.{part}": part for part in _PARTS})

setup(
    name="jetsplit",
    version="0.1.0",
    description="Edge/cloud split-inference runtime for Jetson-class boards",
    python_requires=">=3.10,<3.13",
    packages=_packages,
    package_dir=_package_dir,
    package_data={
        "jetsplit": ["py.typed"],
        "jetsplit.demo": ["zoo/*.onnx", "zoo/*.json", "bundles/*/*"],
        "jetsplit.protocol": ["SPEC.md"],
    },
    install_requires=[
        "numpy>=1.24",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "opencv-python-headless>=4.8",
        "msgspec>=0.18",
        "pyzmq>=25",
        "lz4>=4",
        "zstandard>=0.22",
        "prometheus-client>=0.17",
        # Tuning plots and FP16 conversion (field-engineer tools).
        "matplotlib>=3.6",
        "onnxconverter-common>=1.14",
        "scikit-learn>=1.3",
        "mlxtend>=0.23",
        "tomli>=2.0; python_version < '3.11'",
        "tqdm>=4.60",
        # Real photos for checking splits when the user gives no data.
        "scikit-image>=0.22",
    ],
    extras_require={
        # Jetson: TensorRT's Python bindings come with JetPack's system Python;
        # on x86 hosts with a GPU they come from PyPI.
        "jetson": ["tensorrt>=10", "cuda-python>=12", "jetson-stats>=4.2"],
        # Training the demo zoo only; never a runtime dependency.
        "zoo": ["torch==2.13.0"],
        # Baselines the benchmarks compare against.
        "bench": ["grpcio>=1.60"],
        "dev": [
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "ruff>=0.4",
            "mypy>=1.8",
            "scikit-image>=0.22",
            # Offline validation of the Kubernetes manifest (bundled schemas).
            "kubernetes-validate>=1.29",
        ],
    },
    entry_points={"console_scripts": ["jetsplit = jetsplit.cli:entry"]},
)
