"""serving package."""
import tfenv  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from serving.grpc_settings import prefer_low_latency_polling, quiet_core_log

quiet_core_log()
prefer_low_latency_polling()  # before any serving module imports grpc (see grpc_settings.py)
