"""recsys: shared configuration and the `recsys` command line."""
import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
