"""The checks TF Serving's ServerCore::ReloadConfig makes before it touches the serving state.

A reload that fails any of them is refused with TF Serving's status code and message, and
nothing changes: models, versions and labels keep serving as before. Order and wording
follow server_core.cc / model_service_impl.cc:

1. only a ``model_config_list`` can be loaded (INVALID_ARGUMENT);
2. model names unique, base paths absolute paths or URIs (INVALID_ARGUMENT);
3. a model's platform is set, supported, and not changed by the reload (INVALID_ARGUMENT);
4. every version label points at a version that is AVAILABLE now (FAILED_PRECONDITION,
   "... which is not currently available for inference"), unless
   ``--allow_version_labels_for_unavailable_models`` (then only a label that already exists
   cannot move to an unavailable version).

Config files read at startup or polled get the same checks, with two local allowances
(documented in serving/README.md): an empty ``model_platform`` means "tensorflow" and a
relative base path is resolved against the working directory.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Set

from tensorflow_serving.config import model_server_config_pb2

from serving.errors import FAILED_PRECONDITION, INVALID_ARGUMENT, ServingError

SUPPORTED_PLATFORMS = ("tensorflow",)
_MODEL_TYPE_TENSORFLOW = 1  # ModelType.TENSORFLOW (deprecated field)


def _is_relative(path: str) -> bool:
    return "://" not in path and not path.startswith("/")


def platform_of(config: model_server_config_pb2.ModelConfig, *, lenient: bool = False) -> str:
    """GetPlatform: the deprecated ``model_type`` or ``model_platform``; neither is an error."""
    if config.model_type:
        if config.model_platform:
            raise ServingError(INVALID_ARGUMENT, "Illegal setting both ModelServerConfig::model_type (deprecated) "
                                                 f"and ModelServerConfig::model_platform, model name is {config.name}")
        if config.model_type != _MODEL_TYPE_TENSORFLOW:
            raise ServingError(INVALID_ARGUMENT, f"ModelServerConfig::model_type choice {config.model_type} "
                                                 "not supported.")
        return "tensorflow"
    if not config.model_platform:
        if lenient:
            return "tensorflow"
        raise ServingError(INVALID_ARGUMENT, "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                                             f"nor ModelServerConfig::model_platform, model name is {config.name}")
    return config.model_platform


def check_config_kind(config: model_server_config_pb2.ModelServerConfig) -> None:
    if config.WhichOneof("config") != "model_config_list":
        raise ServingError(INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                             "Only ModelConfigList is currently supported")


def validate_config(new: model_server_config_pb2.ModelServerConfig,
                    old: Optional[model_server_config_pb2.ModelServerConfig] = None, *,
                    available: Callable[[str], Iterable[int]] = lambda name: (),
                    current_labels: Callable[[str], Dict[str, int]] = lambda name: {},
                    check_labels: bool = True, allow_unavailable_labels: bool = False,
                    from_file: bool = False) -> None:
    """Raises the ServingError TF Serving would return for ``new``; returns quietly when it may load.

    ``available(name)``: versions of a model serving now; ``current_labels(name)``: its label map now.
    """
    check_config_kind(new)
    models = new.model_config_list.config
    seen: Set[str] = set()
    for m in models:
        if m.name in seen:
            raise ServingError(INVALID_ARGUMENT, f"Illegal to list model {m.name} multiple times in config list")
        seen.add(m.name)
    for m in models:
        if not m.name:
            raise ServingError(INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if not m.base_path or (_is_relative(m.base_path) and not from_file):
            raise ServingError(INVALID_ARGUMENT, f"Expected model {m.name} to have an absolute path or URI; "
                                                 f"got base_path()={m.base_path}")
    if old is not None and old.WhichOneof("config") == "model_config_list":
        before = {m.name: platform_of(m, lenient=True) for m in old.model_config_list.config}
        for m in models:
            if m.name in before:
                platform = platform_of(m, lenient=from_file)
                if platform != before[m.name]:
                    raise ServingError(INVALID_ARGUMENT, f"Illegal to change a model's platform. For model {m.name} "
                                                         f"platform was {before[m.name]} and new platform requested "
                                                         f"is {platform}")
    if check_labels:
        for m in models:
            if not m.version_labels:
                continue
            serving = set(available(m.name))
            existing = current_labels(m.name)
            for label, version in m.version_labels.items():
                allowed = allow_unavailable_labels and existing.get(label, version) == version
                if not allowed and version not in serving:
                    raise ServingError(FAILED_PRECONDITION, f"Request to assign label to version {version} of model "
                                                            f"{m.name}, which is not currently available for "
                                                            f"inference")
    for m in models:
        platform = platform_of(m, lenient=from_file)
        if platform not in SUPPORTED_PLATFORMS:
            raise ServingError(INVALID_ARGUMENT, f"Model {m.name} requests unsupported platform {platform}")
