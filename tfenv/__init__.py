"""The TensorFlow environment every entry point sets before TensorFlow is imported.

TFRS 0.7.7 needs Keras 2: TF 2.16 ships Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before TensorFlow
is imported. A package of its own, so preprocessing, trainer and serving set it without importing the
CLI's package (``recsys``); every package's ``__init__`` imports this first.

Library start-up noise is off here too, so ``python -m serving.server`` and the other module entry
points start as cleanly as ``recsys`` does: TensorFlow's C++ log at level 3 (its CUDA-plugin
"Unable to register cuFFT/cuDNN/cuBLAS factory" lines are logged as errors on every import, GPU or
not) and google.api_core's Python-version notice. A ``TF_CPP_MIN_LOG_LEVEL`` already in the
environment wins (``TF_CPP_MIN_LOG_LEVEL=0`` brings the C++ log back; ``recsys --verbose`` sets it).
"""
import os
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\.")
