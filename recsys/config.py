"""One typed configuration tree for every step; defaults run the demo on 2 cores.

Overrides come from a YAML/JSON file and/or ``--set section.field=value`` on the
command line. The resolved config is written next to every artifact it produced
(``config.json``) so a run can be reproduced from its outputs alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclasses.dataclass
class DataConfig:
    source: str = "synthetic"        # synthetic | movielens | csv (your own interaction log)
    path: str = ""                   # MovieLens directory (100K, 1M or latest layout), or for csv: the log file or
                                     # a directory with interactions.csv (+ items.csv, users.csv)
    columns: str = ""                # csv: header names the aliases miss, e.g. "user_id=cust,item_id=sku,timestamp=t"
    header: str = ""                 # csv: the interactions file's columns when it has no header line
                                     # ("user_id,item_id,rating,timestamp")
    rating_max: float = 5.0          # csv: the log's top rating (mapped to 5; 10 for a 1-10 scale)
    time_format: str = ""            # csv: the time column's strptime format where no recognised one fits, e.g.
                                     # "%m/%d/%Y %I:%M %p" (US spreadsheets; day/month order is never guessed)
    event_types: str = ""            # csv with an event-type column: the types that count ("transaction,addtocart");
                                     # "" = all but impressions and removals, purchases/carts/favourites as click = 1
    n_users: int = 2000
    n_items: int = 1500
    events_per_user: float = 25.0    # mean; geometric-ish spread
    seed: int = 42
    max_bad_fraction: float = 0.01   # more malformed rows than this is an error, fewer go to dead letters
    unicode_text: bool = False       # synthetic: non-ASCII / non-Latin ids and titles (preprocessing/sources/unicode_text.py)
    item_images: bool = False        # synthetic: also write item_images.npz (small genre-coloured images) beside the
                                     # raw tables; a file source copies <path>/item_images.npz whenever it exists
    statistics_plot: bool = True     # also draw <raw>/statistics.png beside statistics.json (activity, popularity,
                                     # events over time, ratings; preprocessing/sources/profile.py)


@dataclasses.dataclass
class PreprocessConfig:
    eval_fraction: float = 0.1       # the latest events (by time) form the eval split
    runner: str = "DirectRunner"
    direct_num_workers: int = 1
    direct_running_mode: str = "in_memory"   # in_memory | multi_threading | multi_processing
    # (ram:// paths always run in_memory with 1 worker: that filesystem lives in this process)
    beam_args: List[str] = dataclasses.field(default_factory=list)  # e.g. ["--project=...", "--region=..."]
    title_vocab_size: int = 5000
    num_price_buckets: int = 10
    num_age_buckets: int = 8
    history_length: int = 20         # items per event history; fixes the serving inputs' [batch, L] shape


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
    # mixed negative sampling (Yang et al., WWW 2020): each training batch also scores this many items sampled
    # from the catalogue (probability ~ train count ** sampled_alpha; 0 = uniform), beside the in-batch ones,
    # with logQ correction for the mixture. Large catalogues: in-batch negatives are few and all popular
    sampled_negatives: int = 0
    sampled_alpha: float = 0.0
    item_bias: bool = False          # extra embedding slot: query 1 x candidate bias (popularity prior)
    use_user_id: bool = True
    use_history: bool = True
    use_item_features: bool = True
    # how the query tower reads the history (trainer/models/sequence.py): mean (pooled, + last items),
    # gru (GRU4Rec-style) or transformer (SASRec-style causal self-attention with time-gap embeddings)
    history_encoder: str = "mean"
    seq_dim: int = 64                # width of the gru / transformer encoder
    seq_layers: int = 2              # transformer blocks
    seq_heads: int = 2               # attention heads per block
    seq_dropout: float = 0.1
    seq_keep_pooled: bool = True     # gru / transformer: keep the mean + last-3 pooled features beside the encoder
    seq_gate: bool = True            # with seq_keep_pooled: the encoder output is scaled by a learned scalar from 0
    seq_tables: str = "item"         # item tables the encoder reads: item (the candidates'), shared (+ next-item), own
    history_content: bool = False    # the query tower also reads the latest history item's title tokens and genres
                                     # (the candidate tower's tables): finds a rarely seen item's sequel by its title
    # candidate tower (trainer/models/content.py): id = item id (+ content when use_item_features);
    # content = content first (title, genres, price, release, + image), the id embedding dropped with
    # probability id_dropout in training and always for items unseen in training (cold start)
    candidate_tower: str = "id"
    id_dropout: float = 0.5
    # catalogue items without a train event (trainer/unseen_items.py): auto = left out of the index when the
    # log's own latest events show such items are rarely picked up (a products file far larger than the log);
    # keep = always indexed (new releases found by their content); drop = never indexed
    unseen_items: str = "auto"
    user_id_dropout: float = 0.0     # the same for the user id in the query tower (new users: context only)
    # item id tables start from: random rows, or item2vec vectors trained on the train split first
    # (trainer/item_init.py; the item2vec.* settings at id_dim, for item_init_epochs). One process only
    item_init: str = "item2vec"
    item_init_epochs: int = 2
    item_images: str = ""            # "" = no image branch; "data" = the images the training data carries (ingested
                                     # with the raw tables); or a path to an item_images.npz (preprocessing/sources/images.py)


@dataclasses.dataclass
class Item2VecConfig:
    """item2vec / Meta-Prod2Vec item embeddings for `similar_items` (trainer/models/item2vec.py)."""

    dim: int = 64
    window: int = 5                  # context: items within this many positions in a user's history
    negatives: int = 5               # sampled negatives per positive pair (unigram^0.75)
    subsample: float = 1e-3          # frequent-item subsampling threshold (0 = off)
    side_information: bool = True    # Meta-Prod2Vec: genre tokens in the same space, pairs weighted by side_weight
    side_weight: float = 0.5
    batch_size: int = 1024
    epochs: int = 5
    learning_rate: float = 0.005
    optimizer: str = "adam"          # adam (fused, dense moments); sparse_adam (lazy: looked-up rows only) for huge catalogues
    top_k: int = 20                  # neighbours returned by the similar_items export


@dataclasses.dataclass
class VAEConfig:
    """Mult-VAE collaborative filtering (Liang et al. 2018; trainer/models/vae.py)."""

    hidden: int = 600
    latent: int = 200
    dropout: float = 0.5             # input dropout (the denoising part)
    beta_max: float = 0.2            # KL weight, annealed linearly from 0 over anneal_steps
    anneal_steps: int = 2000
    batch_size: int = 128
    epochs: int = 30
    learning_rate: float = 0.001


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 512
    # a small log gets smaller batches so an epoch is still this many optimizer steps (0 = off): at batch 512 a
    # 14K-event shop log had 28 steps an epoch and early stopping cut training before the item table learned
    min_steps_per_epoch: int = 64
    epochs: int = 8
    learning_rate: float = 0.003
    early_stopping_patience: int = 2
    # what early stopping and the best-weights checkpoint watch on the validation slice (a random 5% of train
    # events): loss = the in-batch softmax loss; top_K = recall@K over the full catalogue (K one of eval.ks).
    # top_50 trains longer: better when the test is each user's latest item (ml-latest-small leave-one-out),
    # worse when it is a later period (ml-latest-small time split), so the default is the loss (README)
    early_stopping_metric: str = "loss"
    # retrieval learns first-time events only: an event whose item is already in its history (a re-watch, a
    # re-purchase) is left out of training and validation, as evaluation leaves it out (a no-op on MovieLens)
    skip_repeats: bool = True
    # retrieval: validate and keep an exponential moving average of the weights, this decay per step (0 = off;
    # trainer/weight_average.py). With its warm-up it averages about the last 10% of steps, at most 1/(1-decay):
    # on ml-latest-small and an ML-1M-format copy, the same mean over seeds and a third of the spread (README).
    # One process only: multi-worker and parameter-server training keep the raw weights
    weight_average: float = 0.999
    shuffle_buffer: int = 20000
    seed: int = 7
    verbose: int = 2                 # Keras: 1 = progress bar, 2 = one line per epoch
    steps_per_epoch: Optional[int] = None
    # sparse_adam: Adam whose embedding updates touch only the looked-up rows (trainer/optimizers.py);
    # adam: TF-Keras Adam (rewrites whole tables every step); adagrad
    optimizer: str = "sparse_adam"
    # multi-worker training (trainer/distribute.py): auto = MultiWorkerMirroredStrategy when TF_CONFIG
    # (or an Indexed Job's environment) describes several workers, else one process; parameter_server
    # = ParameterServerStrategy with embedding tables partitioned over the ps tasks
    strategy: str = "auto"
    ps_min_shard_bytes: int = 64 << 20   # tables above this are split over the ps tasks


@dataclasses.dataclass
class EvalConfig:
    ks: Tuple[int, ...] = (10, 50, 100)
    exclude_seen: bool = True        # drop items the user already interacted with from the ranking
    max_queries: int = 0             # 0 = all eval events
    # classic baselines scored beside the model on the same queries and exclusions (trainer/baselines.py)
    baselines: Tuple[str, ...] = ("ease", "item_knn", "als")
    tune_baselines: bool = True      # pick each baseline's hyper-parameter on the latest 10% of train events
    bootstrap: int = 1000            # user-bootstrap replicates for the intervals of claimed differences


@dataclasses.dataclass
class TuneConfig:
    """`recsys tune` (trainer/tune.py): a random search over the two-tower's settings, scored on the train
    split's latest events by the evaluation's own rule; the eval split is never read."""
    trials: int = 8                  # trial 1 is the config as given; the rest are drawn from ``space``
    holdout: float = 0.1             # latest share of train events held out to score the trials (holdout_by=time)
    # time: the train split's latest events, one cut for all (like the eval split); user: each user's latest train
    # event (leave-last-out, users with 2+ events): the objective spreads over every user, not only recent ones
    holdout_by: str = "time"
    metric: str = "recall@50"        # recall@K or ndcg@K, K at most max(eval.ks)
    max_queries: int = 0             # held-out events scored per trial (0 = all)
    epochs: int = 0                  # training budget per trial (0 = train.epochs; early stopping as configured)
    seed: int = 0                    # which combinations are drawn
    # each trial's weights (trials/<n>/checkpoints); its history and config are always kept. Off: a search over a
    # large catalogue would otherwise leave one model (and its optimizer slots) per trial on disk
    keep_checkpoints: bool = False
    # "section.key=v1,v2,...": the values each setting may take (retrieval.*, train.* and item2vec.* keys; `recsys
    # tune --space` replaces the list)
    space: Tuple[str, ...] = ("retrieval.temperature=0.02,0.05,0.1,0.2", "train.learning_rate=0.001,0.003,0.01",
                              "retrieval.embedding_dim=32,64,128", "retrieval.dropout=0.0,0.1,0.3",
                              "train.batch_size=256,512,1024")


@dataclasses.dataclass
class GateConfig:
    """The blessing (recsys/blessing.py): what a candidate must show before it is pushed."""
    k: int = 50                      # retrieval is judged on recall@k
    min_lift: float = 1.1            # offline: two-tower recall@k > min_lift x popularity's (same queries)
    tolerance: float = 0.02          # vs the served version: blocked if a key metric drops by more than this (relative)
    max_events: int = 2000           # fresh eval events both versions answer (deterministic sample; 0 = all)
    bootstrap: int = 500             # user-bootstrap replicates for the reported difference


@dataclasses.dataclass
class ExportConfig:
    model_base_path: str = ""        # default: <workdir>/models
    top_k: int = 100
    scann_num_leaves: int = 0        # 0 = sqrt(num items)
    scann_leaves_to_search: int = 0  # 0 = 10% of leaves, at least ~5000 items' worth (trainer/export.py)
    scann_reordering: int = 200
    version: int = 0                 # 0 = unix time
    recommend_exact: bool = False    # also export recommend_exact (exact retrieval, no custom ops): the GPU tier's


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
    # engagement loss: pointwise (binary cross-entropy per pair) | listwise (softmax of the logged item against the
    # other candidates of its list, as TF Ranking's SoftmaxLoss) | both (their sum; the score stays a probability).
    # both: ml-latest-small nDCG@10 gain over retrieval-only +11.8% vs pointwise +2.7% (README, "Ranking stage")
    loss: str = "both"
    # each training event's weight ~ (its user's events among the ranker's pairs) ** -user_balance: 0 = every event
    # counts once (heavy users dominate what the ranker learns), 1 = every user counts once. 0.5 moved the nDCG@10
    # gain by -1.5 to +1.4 points and its per-user gain by -1.2 to +3.8 (two seeds, ml-latest-small and ML-100K):
    # within the noise, and the rating head a little worse, so events count once (README, "Ranking stage")
    user_balance: float = 0.0
    # where the ranker's training candidates come from (trainer/train_ranking.candidate_retriever):
    # out_of_fold = a retriever that never saw those events, as at serving time | in_sample = the final retriever
    candidates: str = "out_of_fold"
    oof_fraction: float = 0.25       # the latest share of train events the ranker learns from
    oof_epochs: int = 0              # epochs of the out-of-fold retriever (0 = the final one's best epoch)
    rating_init: str = "bias_model"  # bias_model = start the rating head at the user + item bias model | none
    # the rating head adds the user's recent ratings (history_ratings): their mean deviation from the rated items'
    # biases, shrunk towards 0 by this many pseudo-ratings (trainer/models/ranking.recent_rating_offset)
    history_rating_reg: float = 2.0
    covisit_neighbours: int = 50     # co-visitation table width (trainer/covisit.py); the ranker's covisit_* fields
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
class ExplorationConfig:
    """Exploration at re-ranking (recsys/exploration.py): how the top candidates become the shown list."""
    policy: str = "none"             # none (greedy) | epsilon_greedy | thompson
    epsilon: float = 0.1             # epsilon_greedy: share of requests shown a uniformly random ordering
    candidates: int = 50             # top-N scored candidates the policy chooses from
    k: int = 10                      # items shown
    prior_alpha: float = 1.0         # Beta prior of an item's click rate per examination (mean 1/20:
    prior_beta: float = 19.0         #   a new item starts below a typical clicked one)
    propensity_samples: int = 200    # thompson: Monte Carlo re-draws that estimate the logged propensities
    seed: int = 0


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
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    item2vec: Item2VecConfig = dataclasses.field(default_factory=Item2VecConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
    exploration: ExplorationConfig = dataclasses.field(default_factory=ExplorationConfig)

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
        if "://" in path:  # bucket URIs (gs://, s3://, ram://...) go through tf.io.gfile
            from recsys import fileio

            fileio.write_text(path, text)
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # local: no TensorFlow import for this
        with open(path, "w") as f:
            f.write(text)


def default_run_id(cfg: Config) -> str:
    d = cfg.data
    if d.source == "synthetic":
        return f"synthetic-u{d.n_users}-i{d.n_items}-s{d.seed}"
    name = os.path.basename(os.path.normpath(d.path or "data"))
    if d.source == "csv":   # "events.csv.gz" -> "log-events"
        return "log-" + re.sub(r"(\.(csv|tsv|txt))?(\.gz)?$", "", name)
    return "movielens-" + name


# ---------------------------------------------------------------- overrides and validation
class ConfigError(ValueError):
    """A config key, value or file that cannot be used; the message names the problem and the fix."""


# Value rules, checked whenever a config is parsed (file, --set, saved config.json). Every number
# must be finite and >= 0; these keys must also be positive (ints >= 1, floats > 0; lists: each item).
POSITIVE = {
    "data.n_users", "data.n_items", "data.events_per_user", "data.rating_max",
    "preprocess.direct_num_workers", "preprocess.title_vocab_size", "preprocess.num_price_buckets",
    "preprocess.num_age_buckets", "preprocess.history_length",
    "retrieval.embedding_dim", "retrieval.id_dim", "retrieval.feature_dim", "retrieval.hidden",
    "retrieval.temperature", "retrieval.seq_dim", "retrieval.seq_layers", "retrieval.seq_heads",
    "retrieval.item_init_epochs",
    "train.batch_size", "train.epochs", "train.learning_rate", "train.shuffle_buffer", "train.steps_per_epoch",
    "eval.ks", "export.top_k", "gate.k", "gate.min_lift", "gate.bootstrap",
    "ranking.embedding_dim", "ranking.hidden", "ranking.batch_size", "ranking.epochs", "ranking.learning_rate",
    "ranking.train_candidates", "ranking.eval_candidates", "ranking.gbdt_trees", "ranking.gbdt_max_depth",
    "ranking.recommend_candidates", "ranking.recommend_k",
    "item2vec.dim", "item2vec.window", "item2vec.batch_size", "item2vec.epochs", "item2vec.learning_rate",
    "item2vec.top_k", "exploration.candidates", "exploration.k", "exploration.prior_alpha",
    "exploration.prior_beta", "exploration.propensity_samples",
    "vae.hidden", "vae.latent", "vae.batch_size", "vae.epochs", "vae.learning_rate", "tune.trials",
}
# (low, high, inclusive high?) for shares and probabilities
FRACTIONS = {
    "data.max_bad_fraction": (0.0, 1.0, True),
    "preprocess.eval_fraction": (0.0, 1.0, False),
    "retrieval.dropout": (0.0, 1.0, False), "retrieval.seq_dropout": (0.0, 1.0, False),
    "retrieval.id_dropout": (0.0, 1.0, True), "retrieval.user_id_dropout": (0.0, 1.0, True),
    "ranking.dropout": (0.0, 1.0, False), "ranking.retrieval_dropout": (0.0, 1.0, True),
    "ranking.oof_fraction": (0.0, 1.0, True), "vae.dropout": (0.0, 1.0, False),
    "retrieval.sampled_alpha": (0.0, 1.0, True), "train.weight_average": (0.0, 1.0, False),
    "exploration.epsilon": (0.0, 1.0, True), "tune.holdout": (0.0, 1.0, False),
}
OPTIMIZERS = ("sparse_adam", "adam", "adagrad")  # trainer/optimizers.py builds each
CHOICES = {
    "data.source": ("synthetic", "movielens", "csv"),
    "preprocess.direct_running_mode": ("in_memory", "multi_threading", "multi_processing"),
    "retrieval.history_encoder": ("mean", "gru", "transformer"),
    "retrieval.seq_tables": ("shared", "item", "own"),
    "retrieval.candidate_tower": ("id", "content"),
    "retrieval.item_init": ("random", "item2vec"),
    "tune.holdout_by": ("time", "user"),
    "retrieval.unseen_items": ("auto", "keep", "drop"),
    "ranking.dcn_structure": ("stacked", "parallel"),
    "ranking.engagement_label": ("consumed", "click"),
    "ranking.loss": ("pointwise", "listwise", "both"),
    "exploration.policy": ("none", "epsilon_greedy", "thompson"),
    "train.optimizer": OPTIMIZERS,
    "item2vec.optimizer": OPTIMIZERS,
    "train.strategy": ("auto", "multi_worker", "parameter_server", "none"),  # trainer/distribute.py
}
PORTS = {"serving.grpc_port", "serving.rest_port"}


def _coerce(value: str, current: Any, field_type: Any) -> Any:
    """Parses a command-line string into the type of the field it overrides."""
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
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


def _expected_kind(default: Any, field_type: Any) -> str:
    text = str(field_type)
    if isinstance(default, bool) or text == "bool":
        return "bool"
    if isinstance(default, float) or text in ("float", "Optional[float]"):
        return "float"
    if isinstance(default, int) or "int" in text and "Tuple" not in text and "List" not in text:
        return "int"
    if isinstance(default, str) or text in ("str", "Optional[str]"):
        return "str"
    return "any"


def _typed(dotted: str, value: Any, current: Any, field_type: Any) -> Any:
    """``value`` (from a file, --set or a saved config) in the field's type, or a ConfigError."""
    try:
        if isinstance(value, str) and not isinstance(current, str):
            value = _coerce(value, current, field_type)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
    except ValueError as e:
        raise ConfigError(f"{dotted}={value!r} is not a valid {type(current).__name__}: {e}; "
                          f"e.g. --set {dotted}={_show(current)}") from None
    kind = _expected_kind(current, field_type)
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}.get(kind, lambda v: True)
    if value is None and "Optional" in str(field_type):
        return None
    if not ok(value):
        raise ConfigError(f"{dotted}={value!r} has type {type(value).__name__}, expected {kind}; "
                          f"e.g. --set {dotted}={_show(current)}")
    return float(value) if kind == "float" else value


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_value(dotted: str, value: Any, default: Any = None) -> None:
    """Raises ConfigError when ``value`` breaks the rules for ``dotted`` (see POSITIVE, FRACTIONS, ...)."""
    fix = f"; e.g. --set {dotted}={_show(default)}" if default is not None else ""
    if dotted in CHOICES and value not in CHOICES[dotted]:
        raise ConfigError(f"{dotted}={value!r} is not one of {', '.join(CHOICES[dotted])}"
                          f"; e.g. --set {dotted}={CHOICES[dotted][0]}")
    if dotted == "train.early_stopping_metric" and not re.fullmatch(r"loss|top_[1-9][0-9]*", str(value)):
        raise ConfigError(f"{dotted}={value!r} must be loss or top_K (K one of eval.ks); e.g. --set {dotted}=top_50")
    items = value if isinstance(value, (tuple, list)) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise ConfigError(f"{dotted}={value!r} is not a finite number{fix}")
        if dotted in PORTS and not 0 <= v <= 65535:
            raise ConfigError(f"{dotted}={value!r} is not a port (0-65535){fix}")
        if dotted in FRACTIONS:
            lo, hi, closed = FRACTIONS[dotted]
            if not (lo <= v <= hi if closed else lo <= v < hi) or (dotted == "preprocess.eval_fraction" and v <= 0):
                bounds = f"[{lo:g}, {hi:g}{']' if closed else ')'}"
                if dotted == "preprocess.eval_fraction":
                    bounds = "(0, 1)"
                raise ConfigError(f"{dotted}={value!r} must be a fraction in {bounds}{fix}")
        elif dotted in POSITIVE and not (v >= 1 if isinstance(v, int) else v > 0):
            need = "at least 1" if isinstance(v, int) else "greater than 0"
            raise ConfigError(f"{dotted}={value!r} must be {need}{fix}")
        elif v < 0:
            raise ConfigError(f"{dotted}={value!r} must not be negative{fix}")


def apply_override(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise ConfigError(f"unknown config section {p!r} in {dotted!r}; sections: {', '.join(_sections(obj))}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if leaf not in fields:
        raise ConfigError(f"unknown config key {dotted!r}; known keys here: {', '.join(sorted(fields))}")
    current = getattr(obj, leaf)
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted!r} is a section; give one of its keys, e.g. {dotted}.{_fields(current)[0]}=...")
        for k, v in value.items():
            apply_override(cfg, f"{dotted}.{k}", v)
        return
    value = _typed(dotted, value, current, fields[leaf].type)
    check_value(dotted, value, fields[leaf].default if fields[leaf].default is not dataclasses.MISSING else current)
    setattr(obj, leaf, value)


def _sections(obj) -> List[str]:
    return [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]


def _fields(obj) -> List[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _read_text(path: str) -> str:
    """A config file's text: URIs through tf.io.gfile, local files without importing TensorFlow (CLI start-up)."""
    if "://" not in path:
        with open(path) as f:
            return f.read()
    from recsys import fileio

    try:
        return fileio.read_text(path)
    except Exception as e:  # noqa: BLE001  (tf.errors.NotFoundError etc. are not OSErrors)
        detail = getattr(e, "message", "") or str(e)
        raise OSError(type(e).__name__ + (f": {detail}" if detail else "")) from None


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- file (YAML or JSON) <- ``key=value`` overrides; raises ConfigError on any bad input."""
    cfg = Config()
    if path:
        try:
            text = _read_text(path)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path!r}: {e.strerror or e}; check --config") from None
        try:
            if path.endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as e:  # noqa: BLE001  (yaml.YAMLError / json.JSONDecodeError)
            first = " ".join(str(e).split())[:300]
            raise ConfigError(f"config file {path!r} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}"
                              f": {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping of sections (e.g. 'train: {{epochs: 3}}'), "
                              f"not {type(data).__name__}")
        for k, v in data.items():
            apply_override(cfg, str(k), v)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value, e.g. --set train.epochs=3")
        k, v = ov.split("=", 1)
        apply_override(cfg, k.strip(), v.strip())
    return cfg


def from_dict(data: Dict[str, Any]) -> Config:
    cfg = Config()
    for k, v in data.items():
        apply_override(cfg, k, v)
    return cfg
