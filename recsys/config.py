"""One typed configuration tree for every step; defaults run the demo on 2 cores.

Overrides come from a YAML/JSON file and/or ``--set section.field=value`` on the
command line. The resolved config is written next to every artifact it produced
(``config.json``) so a run can be reproduced from its outputs alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclasses.dataclass
class DataConfig:
    source: str = "synthetic"        # synthetic | movielens
    path: str = ""                   # MovieLens directory (100K, 1M or latest layout)
    n_users: int = 2000
    n_items: int = 1500
    events_per_user: float = 25.0    # mean; geometric-ish spread
    seed: int = 42
    max_bad_fraction: float = 0.01   # more malformed rows than this is an error, fewer go to dead letters


@dataclasses.dataclass
class PreprocessConfig:
    eval_fraction: float = 0.1       # the latest events (by time) form the eval split
    runner: str = "DirectRunner"
    direct_num_workers: int = 1
    direct_running_mode: str = "in_memory"   # in_memory | multi_threading | multi_processing
    beam_args: List[str] = dataclasses.field(default_factory=list)  # e.g. ["--project=...", "--region=..."]
    title_vocab_size: int = 5000
    num_price_buckets: int = 10
    num_age_buckets: int = 8


@dataclasses.dataclass
class RetrievalConfig:
    embedding_dim: int = 64          # output of both towers
    id_dim: int = 32                 # id embedding width
    feature_dim: int = 8             # small categorical embedding width
    hidden: Tuple[int, ...] = (128,)
    temperature: float = 0.05
    dropout: float = 0.0
    batch_norm: bool = False
    l2: float = 0.0
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    item_bias: bool = False          # extra embedding slot: query 1 x candidate bias (popularity prior)
    use_user_id: bool = True
    use_history: bool = True
    use_item_features: bool = True


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 512
    epochs: int = 8
    learning_rate: float = 0.003
    early_stopping_patience: int = 2
    shuffle_buffer: int = 20000
    seed: int = 7
    verbose: int = 2                 # Keras: 1 = progress bar, 2 = one line per epoch
    steps_per_epoch: Optional[int] = None


@dataclasses.dataclass
class EvalConfig:
    ks: Tuple[int, ...] = (10, 50, 100)
    exclude_seen: bool = True        # drop items the user already interacted with from the ranking
    max_queries: int = 0             # 0 = all eval events


@dataclasses.dataclass
class ExportConfig:
    model_base_path: str = ""        # default: <workdir>/models
    top_k: int = 100
    scann_num_leaves: int = 0        # 0 = sqrt(num items)
    scann_leaves_to_search: int = 0  # 0 = 10% of leaves, at least ~5000 items' worth (trainer/export.py)
    scann_reordering: int = 200
    version: int = 0                 # 0 = unix time


@dataclasses.dataclass
class RankingConfig:
    """Second stage: re-rank retrieval's top-N with a richer model (trainer/models/ranking.py)."""

    model: str = "dcn"               # dcn | wide_deep | deepfm: the one train-ranking exports
    embedding_dim: int = 16          # every feature field (categorical embedding or scaled numeric)
    hidden: Tuple[int, ...] = (128, 64)
    cross_layers: int = 2            # DCN-v2
    dcn_structure: str = "stacked"   # stacked (cross -> deep) | parallel (cross || deep)
    projection_dim: int = 0          # low-rank cross W = U V (0 = full rank)
    dropout: float = 0.1
    batch_norm: bool = False
    l2: float = 1e-5                 # on embeddings and kernels
    # ranker fields set to zero (names in trainer/models/ranking.FIELDS). user_id is off by default: the user's
    # taste reaches the ranker through history and retrieval, and a per-user embedding over-fits the train
    # events (ml-latest-small: nDCG@10 +11% over retrieval without it, +7% with it; benchmarks/ranking.py)
    features_off: Tuple[str, ...] = ("user_id",)
    retrieval_dropout: float = 0.0   # train-time: P(a row hides retrieval_rank/score from the ranker)
    engagement_weight: float = 1.0   # multi-task loss weights
    rating_weight: float = 1.0
    engagement_label: str = "consumed"  # consumed (the logged item) | click (logged and clicked)
    train_candidates: int = 100      # N retrieved per train event to draw negatives from
    negatives: int = 8               # sampled negatives per positive
    negative_rank_power: float = 0.0  # P(negative) ~ rank^-power in the retrieved list (0 = uniform)
    max_train_events: int = 20000    # train events to build pairs from (0 = all): bounds time on 2 cores
    eval_candidates: int = 100       # re-rank retrieval's top-N on the eval split
    eval_max_queries: int = 0        # 0 = all eval events
    batch_size: int = 512
    epochs: int = 3
    learning_rate: float = 0.003
    early_stopping_patience: int = 1
    gbdt_trees: int = 200
    gbdt_max_depth: int = 6
    recommend_candidates: int = 100  # N: most ScaNN candidates the recommend model re-ranks
    recommend_k: int = 10            # k returned by serving_default


@dataclasses.dataclass
class ServingConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501


@dataclasses.dataclass
class Config:
    workdir: str = "runs"
    run_id: str = ""                 # default: derived from the data config
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)

    # ------------------------------------------------------------ paths of one run
    @property
    def run_dir(self) -> str:
        return os.path.join(self.workdir, self.run_id or default_run_id(self))

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    @property
    def model_base_path(self) -> str:
        return self.export.model_base_path or os.path.join(self.run_dir, "models")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if "://" in path:  # bucket URIs go through TensorFlow's filesystems
            import tensorflow as tf

            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "w") as f:
                f.write(text)
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def default_run_id(cfg: Config) -> str:
    d = cfg.data
    if d.source == "synthetic":
        return f"synthetic-u{d.n_users}-i{d.n_items}-s{d.seed}"
    return "movielens-" + os.path.basename(os.path.normpath(d.path or "data"))


# ---------------------------------------------------------------- overrides
def _coerce(value: str, current: Any, field_type: Any) -> Any:
    """Parses a command-line string into the type of the field it overrides."""
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, (tuple, list)):
        items = [v for v in value.strip("[]()").split(",") if v.strip()]
        kind = type(current[0]) if current else (int if "int" in str(field_type) else str)
        out = [kind(v.strip()) for v in items]
        return tuple(out) if isinstance(current, tuple) else out
    if current is None:
        if value.lower() in ("none", "null", ""):
            return None
        try:
            return int(value)
        except ValueError:
            return value
    return value


def apply_override(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise KeyError(f"unknown config section {p!r} in {dotted!r}; sections: {_sections(obj)}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if leaf not in fields:
        raise KeyError(f"unknown config key {dotted!r}; known keys here: {sorted(fields)}")
    current = getattr(obj, leaf)
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ValueError(f"{dotted!r} is a section; give its fields")
        for k, v in value.items():
            apply_override(cfg, f"{dotted}.{k}", v)
        return
    if isinstance(value, str):
        value = _coerce(value, current, fields[leaf].type)
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    setattr(obj, leaf, value)


def _sections(obj) -> List[str]:
    return [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- file (YAML or JSON) <- ``key=value`` overrides."""
    cfg = Config()
    if path:
        with open(path) as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        for k, v in data.items():
            apply_override(cfg, k, v)
    for ov in overrides:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like section.key=value")
        k, v = ov.split("=", 1)
        apply_override(cfg, k.strip(), v.strip())
    return cfg


def from_dict(data: Dict[str, Any]) -> Config:
    cfg = Config()
    for k, v in data.items():
        apply_override(cfg, k, v)
    return cfg
