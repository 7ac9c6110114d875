"""The stages as functions of input artifacts -> output artifacts (``recsys.artifacts``).

    ingest(cfg)                         -> RawData
    preprocess(raw)                     -> Preprocessed
    tune(pre)                           -> HyperParameters     (TFX's Tuner: the two-tower's best settings)
    train_retrieval(pre)                -> RetrievalModel
    evaluate_retrieval(model)           -> Evaluation          (two-tower beside the classic baselines)
    train_ranker(model)                 -> Ranker, Evaluation  (re-ranking gain, rating RMSE)
    export(model, ranker)               -> ExportedModels      (staged SavedModels, not served)
    bless(exported, serving base path)  -> Blessing            (candidate vs the served version)
    push(exported, blessing)            -> PushedModel         (only a blessed candidate is published)

Every stage takes the URI it writes to; nothing here knows a run directory (``recsys.layout``
maps a config to the CLI's URIs, the pipeline lets KFP choose them). With ``reuse=True`` a
stage whose output URI already holds a complete artifact with the same fingerprint returns it
untouched: that is the pipeline's cache. The CLI, the KFP components and the k8s Jobs are thin
compositions of these functions.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from recsys import artifacts as af
from recsys import fileio
from recsys.config import Config

# the config sections each stage reads (its fingerprint covers them and nothing else)
SECTIONS: Dict[str, Tuple[str, ...]] = {
    "ingest": ("data",),
    "add_feedback": ("data.max_bad_fraction",),
    "preprocess": ("preprocess", "data.max_bad_fraction"),
    # item2vec: the item tables start from its vectors (retrieval.item_init)
    "tune": ("tune", "retrieval", "train", "item2vec", "eval.ks", "eval.baselines", "eval.bootstrap"),
    "train_retrieval": ("retrieval", "train", "item2vec"),
    "evaluate_retrieval": ("eval",),
    "train_ranker": ("ranking", "retrieval", "train", "item2vec", "eval"),
    "export": ("export", "ranking", "exploration.policy", "exploration.epsilon", "exploration.candidates",
               "exploration.seed"),   # recommend reads ranking.recommend_*; its explore signature exploration.*
    "bless": ("gate",),
}
# settings that change how or where a stage runs, not what it produces
NOT_CONTENT = ("runner", "direct_num_workers", "direct_running_mode", "beam_args", "verbose", "model_base_path",
               "version")


def log(msg: str) -> None:
    print(msg, flush=True)


def params(stage: str, cfg: Config) -> Dict:
    """The slice of ``cfg`` a stage depends on (execution-only settings such as the Beam runner excluded)."""
    full = cfg.to_dict()
    out = {}
    for key in SECTIONS[stage]:
        section, _, field = key.partition(".")
        value = full[section][field] if field else full[section]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NOT_CONTENT}
        out[key] = value
    return out


def plan(stage: str, cfg: Config, *inputs: Optional[af.Artifact], **extra) -> str:
    """The fingerprint ``stage`` will give its output (so a caller can choose a content-addressed URI)."""
    if stage == "ingest":  # file sources: their files, not only their path
        extra.setdefault("source", source_stamp(cfg))
    return af.fingerprint(stage, dict(params(stage, cfg), **extra), [a for a in inputs if a is not None])


def _cached(kind, uri: str, fingerprint: str, reuse: bool):
    if reuse and kind.exists(uri):
        art = kind.read(uri)
        if art.fingerprint == fingerprint:
            log(f"[cache] {kind.TYPE} reused: {uri} (fingerprint {fingerprint})")
            return art
    return None


def _lineage(**inputs: Optional[af.Artifact]) -> Dict[str, str]:
    return {k: a.uri for k, a in inputs.items() if a is not None}


# ---------------------------------------------------------------- data
def ingest(cfg: Config, out: str, reuse: bool = False) -> af.RawData:
    """The configured source's raw tables (synthetic generator, MovieLens files or an interaction log) at ``out``."""
    from preprocessing.sources import load_source, write_raw

    fp = plan("ingest", cfg)
    hit = _cached(af.RawData, out, fp, reuse)
    if hit:
        return hit
    t0 = time.time()
    tables = load_source(cfg.data, dead_letter_path=af.join(out, "dead_letter", "source.jsonl"))
    write_raw(tables, out)
    images = _ingest_images(cfg, tables, out)
    cfg.save(af.join(out, "config.json"))
    dead = f", {len(tables.dead_letters)} malformed rows -> {out}/dead_letter/" if tables.dead_letters else ""
    log(f"[data] {cfg.data.source}: {tables.num_interactions} interactions, {len(tables.users['user_id'])} users, "
        f"{len(tables.items['item_id'])} items in {time.time() - t0:.1f}s -> {out}{dead}")
    problems = _profile(cfg, tables, out)
    props = {"source": cfg.data.source, "interactions": int(tables.num_interactions),
             "users": len(tables.users["user_id"]), "items": len(tables.items["item_id"]),
             "dead_letters": len(tables.dead_letters), "item_images": images, "data_problems": problems}
    return af.RawData(out, props, {}, fp, "ingest").commit()


def _profile(cfg: Config, tables, out: str) -> List[str]:
    """The raw tables' statistics beside them (``statistics.json``, ``statistics.png``), their shape in one line and
    each quiet problem in one more (preprocessing/sources/profile.py); returns those problems."""
    from preprocessing.sources import profile

    stats = profile.profile(tables)
    problems = profile.problems(stats)
    fileio.write_json(af.join(out, profile.STATISTICS_FILE), dict(stats, problems=problems), indent=1)
    if cfg.data.statistics_plot:
        profile.plot(stats, af.join(out, profile.PLOT_FILE))
    log(f"[data] {profile.summary(stats)}")
    for line in problems:
        log(f"[data] warning: {line}")
    return problems


def _ingest_images(cfg: Config, tables, out: str) -> bool:
    """Item images beside the raw tables (the content tower's image branch reads them): generated for the
    synthetic source when ``data.item_images``; a file source's own ``item_images.npz`` is checked and copied."""
    from preprocessing.sources import images, synthetic

    if cfg.data.source == "synthetic":
        if cfg.data.item_images:
            synthetic.write_item_images(tables, out, seed=cfg.data.seed)
            return True
        return False
    src = fileio.join(cfg.data.path, images.IMAGES_FILE) if cfg.data.path else ""
    if not src or not fileio.exists(src):
        return False
    images.write(af.join(out, images.IMAGES_FILE), *images.read(src))  # read validates (no pickle)
    return True


def copy_item_images(src_dir: str, dst_dir: str) -> None:
    """Carries ``item_images.npz`` along when a stage rewrites the item data elsewhere (feedback, preprocess)."""
    from preprocessing.sources import images

    src = af.join(src_dir, images.IMAGES_FILE)
    if fileio.exists(src):
        fileio.makedirs(dst_dir)
        fileio.copy(src, af.join(dst_dir, images.IMAGES_FILE))


def source_stamp(cfg: Config) -> list:
    """What identifies file input beyond the config: each source file's name, size and mtime (MovieLens, a log)."""
    path = cfg.data.path
    if cfg.data.source == "synthetic" or not path or not fileio.exists(path):
        return []
    files = ([path] if not fileio.isdir(path)   # an interaction log given as one file
             else [f for f in (fileio.join(path, n) for n in fileio.listdir(path)) if not fileio.isdir(f)])
    return sorted([os.path.basename(f), fileio.size(f), fileio.mtime(f)] for f in files)


def raw_data(uri: str) -> af.RawData:
    """The RawData at ``uri``; raw tables written by other tools are adopted (fingerprint = their sizes)."""
    if af.RawData.exists(uri):
        return af.RawData.read(uri)
    from preprocessing.sources import tables

    files = {}
    for name in (tables.USERS_FILE, tables.ITEMS_FILE, tables.INTERACTIONS_FILE):
        path = af.join(uri, name)
        if not fileio.exists(path):
            raise FileNotFoundError(f"no raw table {path}: write the raw data first (`recsys data synth` or "
                                    f"`recsys data movielens --path DIR`)")
        files[name] = [fileio.size(path), fileio.mtime(path)]
    return af.RawData(uri, {"source": "external", **files}, {}, af.fingerprint("adopted_raw", {"files": files}),
                      "external")


def feedback_files(logs: Sequence[str], events: Sequence[str]) -> list:
    """What identifies feedback input beyond its locations (logs grow under one prefix): each request log
    and events file's name, size and mtime. A one-line error when there are none."""
    from contracts import prediction_log

    log_files = sorted({f for p in logs for f in prediction_log.log_files(p)})
    if not log_files:
        raise FileNotFoundError(f"no request log files for {list(logs)} (give TF Serving's filename_prefix "
                                f"or .tfrecord paths)")
    missing = [e for e in events if not fileio.exists(e)] or ([] if events else ["(none given)"])
    if missing:
        raise FileNotFoundError(f"events file not found: {missing[0]}")
    return [[f, fileio.size(f), fileio.mtime(f)] for f in log_files + sorted(events)]


def add_feedback(raw: af.RawData, cfg: Config, out: str, logs: Sequence[str], events: Sequence[str],
                 reuse: bool = False) -> af.RawData:
    """``raw`` plus what users did with what they were shown: request logs joined with events
    (preprocessing/feedback.py) become new interactions; the joined examples, with the model, version,
    position and propensity of each shown item, are kept beside them (``feedback/examples.jsonl``)."""
    from preprocessing import feedback
    from preprocessing.sources import tables

    fp = plan("add_feedback", cfg, raw, files=feedback_files(logs, events))
    hit = _cached(af.RawData, out, fp, reuse)
    if hit:
        return hit
    t0 = time.time()
    evs = feedback.read_events(list(events), max_bad_fraction=cfg.data.max_bad_fraction)
    joined = feedback.join_logs(list(logs), evs.rows)
    rows, counts = feedback.as_interactions(joined)
    fileio.makedirs(out)
    problems = _profile_feedback(raw, rows, out)
    for name in (tables.ITEMS_FILE, tables.USERS_FILE):
        fileio.copy(af.join(raw.uri, name), af.join(out, name))
    copy_item_images(raw.uri, out)
    tables.append_interactions(af.join(raw.uri, tables.INTERACTIONS_FILE), rows, af.join(out, tables.INTERACTIONS_FILE))
    feedback.write_jsonl(joined.examples, af.join(out, "feedback", "examples.jsonl"))
    if evs.dead_letters:
        feedback.write_jsonl(evs.dead_letters, af.join(out, "dead_letter", "events.jsonl"))
    props = {"source": "feedback", "feedback_interactions": len(rows), "bad_events": len(evs.dead_letters), **counts,
             **{k: v for k, v in joined.counts.items() if ":" not in k}, "data_problems": problems}
    log(f"[feedback] {len(rows)} new interactions ({counts['from_served']} engaged impressions, "
        f"{counts['organic']} organic) from {joined.counts['impressions']} impressions and {len(evs.rows)} events "
        f"in {time.time() - t0:.1f}s -> {out}")
    for line in problems:
        log(f"[feedback] warning: {line}")
    return af.RawData(out, props, _lineage(raw=raw), fp, "add_feedback").commit()


def _profile_feedback(raw: af.RawData, rows, out: str) -> List[str]:
    """The new interactions' statistics (``feedback/statistics.json``) and their problems, checked against the data
    they join: items the catalogue lacks, events older than its latest (profile.new_events)."""
    from preprocessing.sources import profile, tables

    catalogue = tables.read_table(af.join(raw.uri, tables.ITEMS_FILE))
    last_ts = profile.last_event_time(raw.uri)
    stats, problems = profile.new_events(rows, catalogue, last_ts)
    fileio.makedirs(af.join(out, "feedback"))
    fileio.write_json(af.join(out, "feedback", profile.STATISTICS_FILE),
                      dict(stats, problems=problems, appended_to_last_ts=last_ts), indent=1)
    return problems


def preprocess(raw: af.RawData, cfg: Config, out: str, reuse: bool = False) -> af.Preprocessed:
    """Beam + TF-Transform over ``raw`` into exactly ``out`` (tfrecords, transform graph, catalogue)."""
    from preprocessing import pipeline

    fp = plan("preprocess", cfg, raw)
    hit = _cached(af.Preprocessed, out, fp, reuse)
    if hit:
        return hit
    pipeline.write(cfg, raw.uri, out)
    copy_item_images(raw.uri, out)  # the data a model trains on carries its items' images
    cfg.save(af.join(out, "config.json"))
    stats = pipeline.load_stats(out)
    props = {k: stats[k] for k in ("train", "eval", "dead_letters", "split_cutoff_ts") if k in stats}
    return af.Preprocessed(out, props, _lineage(raw=raw), fp, "preprocess").commit()


def preprocessed_of(model: af.Artifact) -> af.Preprocessed:
    """The Preprocessed artifact a model was trained on (from its lineage)."""
    return af.Preprocessed.read(model.inputs["preprocessed"])


# ---------------------------------------------------------------- retrieval
def tune(pre: af.Preprocessed, cfg: Config, out: str, reuse: bool = False) -> af.HyperParameters:
    """TFX's Tuner: ``cfg.tune.trials`` trials of the two-tower on ``pre``'s train split, scored on its latest
    events (trainer/tune.py; the eval split is never read) -> the best trial's settings, every trial beside them."""
    from trainer import tune as tune_mod

    fp = plan("tune", cfg, pre)
    hit = _cached(af.HyperParameters, out, fp, reuse)
    if hit:
        return hit
    result = tune_mod.run(cfg, pre.uri, out, log=log)
    best, lead = result["best"], result["best_over_given"]
    props = {"metric": result["metric"], "best_trial": best["trial"], "best_score": best[result["metric"]],
             "trials": len(result["trials"]), "overrides": dict(best["overrides"]),
             "given_score": result["trials"][0][result["metric"]],
             **({"lead": lead["lead"], "lead_low": lead["low"], "lead_high": lead["high"]} if lead else {}),
             "n_queries": result["holdout"]["n_queries"], "eval_split_read": False}
    return af.HyperParameters(out, props, _lineage(preprocessed=pre), fp, "tune").commit()


def tuned(cfg: Config, hp: af.HyperParameters) -> Config:
    """A copy of ``cfg`` with the Tuner's best settings applied."""
    from trainer import tune as tune_mod

    return tune_mod.trial_config(cfg, hp.overrides)


def train_retrieval(pre: af.Preprocessed, cfg: Config, out: str, reuse: bool = False,
                    warm_start: Optional[af.RetrievalModel] = None):
    """The two-tower on ``pre``'s train split -> (RetrievalModel, the in-memory TrainedRetrieval or None).

    ``warm_start``: a previous model whose weights the new one starts from (continuous training); it is
    an input, so it is in the lineage and the fingerprint.
    """
    from trainer import preflight, train as trainer_train

    fp = plan("train_retrieval", cfg, pre, warm_start)
    hit = _cached(af.RetrievalModel, out, fp, reuse)
    if hit:
        return hit, None
    preflight.check(pre.uri)  # fail in seconds, not after training, on what the exports cannot hold
    previous = restore_retrieval(warm_start, cfg) if warm_start is not None else None
    trained = trainer_train.train_retrieval(pre.uri, cfg, out_dir=out, warm_start=previous)
    best = {k: (min(v) if "loss" in k else max(v)) for k, v in trained.history.items() if k.startswith("val_")}
    props = {"train_seconds": round(trained.train_seconds, 1), "epochs": len(trained.history.get("loss", [])),
             "items": int(trained.catalogue.size), **{f"best_{k}": float(v) for k, v in best.items()}}
    model = af.RetrievalModel(out, props, _lineage(preprocessed=pre, warm_start=warm_start), fp, "train_retrieval")
    if trained.out_dir == out:  # the chief; other workers of a multi-worker job wrote to scratch
        model.commit()
    return model, trained


def trained_config(art: af.Artifact, cfg: Config, sub: str = "") -> Config:
    """The config a model was trained with (its architecture must match its weights), else ``cfg``."""
    from recsys.config import from_dict

    path = art.path(sub, "config.json") if sub else art.path("config.json")
    if not fileio.exists(path):
        return cfg
    data = fileio.read_json(path)
    saved = from_dict(data)
    if "seq_keep_pooled" not in data.get("retrieval", {}):
        # saved before sequence encoders sat beside the pooled history: the encoder alone, on shared tables
        saved.retrieval.seq_keep_pooled, saved.retrieval.seq_tables = False, "shared"
    if "early_stopping_metric" not in data.get("train", {}):  # saved when early stopping watched the loss
        saved.train.early_stopping_metric = "loss"
    return saved


def restore_retrieval(model: af.RetrievalModel, cfg: Config):
    """The TrainedRetrieval rebuilt with its own config; weights restore from the best checkpoint as the
    towers create them."""
    from trainer import train as trainer_train

    pre = preprocessed_of(model)
    tcfg = trained_config(model, cfg)
    m, sizes, catalogue, stats, tft_output = trainer_train.build_retrieval(pre.uri, tcfg, with_metrics=False)
    m.load_weights(model.checkpoint).expect_partial()
    history = model.path("history.json")
    return trainer_train.TrainedRetrieval(m, sizes, catalogue, stats, tft_output,
                                          fileio.read_json(history) if fileio.exists(history) else {},
                                          float(model.get("train_seconds", 0.0)), model.uri,
                                          trainer_train.early_stopping_monitor(tcfg.train, tcfg.eval.ks, True))


def load_retrieval(model: af.RetrievalModel, cfg: Config):
    """(TrainedRetrieval restored from the best checkpoint, item vectors of the whole catalogue)."""
    trained = restore_retrieval(model, cfg)
    return trained, item_vectors(trained)


def restored(model: af.RetrievalModel, cfg: Config, trained=None):
    """(trained, item vectors): the caller's in-memory model when it has one, else restored from ``model``."""
    return (trained, item_vectors(trained)) if trained is not None else load_retrieval(model, cfg)


def item_vectors(trained) -> np.ndarray:
    from trainer import evaluate_retrieval as er

    return er.catalogue_vectors(trained)


def evaluate_retrieval(model: af.RetrievalModel, cfg: Config, out: str, trained=None,
                       reuse: bool = False) -> af.Evaluation:
    """Full-ranking evaluation (honest exclusions) of the two-tower beside the classic baselines."""
    from trainer import evaluate_retrieval as er

    fp = plan("evaluate_retrieval", cfg, model)
    hit = _cached(af.Evaluation, out, fp, reuse)
    if hit:
        return hit
    pre = preprocessed_of(model)
    trained, vectors = restored(model, cfg, trained)
    t0 = time.time()
    details: Dict = {}
    results = er.evaluate(pre.uri, lambda b: trained.model.query_tower(b), vectors, trained.catalogue,
                          trained.stats, cfg, details=details)
    log(er.report(results, tuple(cfg.eval.ks)))
    er.write_metrics(results, af.join(out, "metrics.json"), {
        "eval_seconds": time.time() - t0, "train_seconds": trained.train_seconds,
        "exclude_seen": cfg.eval.exclude_seen, "baseline_tuning": details.get("tuning"),
        "repeat_events_left_out": details.get("n_repeat_left_out"), "eval_events": details.get("n_eval_events"),
        "unseen_items": trained.stats.servable_info})
    log(f"[evaluate] metrics -> {af.join(out, 'metrics.json')}")
    return af.Evaluation(out, {"protocol": er.PROTOCOL, **flat_metrics(results)}, _lineage(model=model), fp,
                         "evaluate_retrieval").commit()


def flat_metrics(results: Dict, prefix: str = "") -> Dict[str, float]:
    """{"two_tower": {"recall@50": x}} -> {"two_tower_recall_at_50": x} (names KFP/Vertex UIs accept)."""
    out = {}
    for key, value in results.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[name.replace("@", "_at_")] = float(value)
    return out


# ---------------------------------------------------------------- ranking
def train_ranker(model: af.RetrievalModel, cfg: Config, out: str, eval_out: str, rankers: Sequence[str] = (),
                 gbdt: bool = False, trained=None, reuse: bool = False):
    """Rankers on retrieval's candidates -> (Ranker at ``out``, its re-ranking Evaluation at ``eval_out``, details)."""
    from trainer import train_ranking as tr

    rankers = list(rankers) or [cfg.ranking.model]
    fp = plan("train_ranker", cfg, model, rankers=rankers, gbdt=gbdt)
    hit = _cached(af.Ranker, out, fp, reuse)
    if hit and af.Evaluation.exists(eval_out):
        return hit, af.Evaluation.read(eval_out), None
    pre = preprocessed_of(model)
    trained, vectors = restored(model, cfg, trained)
    result = tr.train_and_evaluate(cfg, pre.uri, trained, vectors, rankers=rankers, gbdt=gbdt, out_dir=out)
    af.write_json(af.join(eval_out, "metrics.json"), af.read_json(af.join(out, "metrics.json")))
    ranker = af.Ranker(out, {"model": rankers[0], "rankers": rankers}, _lineage(retrieval=model), fp,
                       "train_ranker").commit()
    evaluation = af.Evaluation(eval_out, {"protocol": "rerank_retrieval_top_n", **flat_metrics(result["results"])},
                               _lineage(ranker=ranker, retrieval=model), fp, "train_ranker").commit()
    return ranker, evaluation, result


def load_ranker(ranker: af.Ranker, trained, cfg: Config, name: Optional[str] = None):
    from trainer import explain, train_ranking as tr

    name = name or ranker.properties["model"]
    return tr.load_ranker(ranker.model_dir(name), trained_config(ranker, cfg, name), explain.example_batch(trained))


# ---------------------------------------------------------------- export -> bless -> push
def sample_request(pre: af.Preprocessed, user_id: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A raw query for one eval-period user at the split cutoff (history = everything before it).

    Kept per preprocessed version (immutable once written) and user: building it reads every raw event,
    3.5 s on ml-latest-small, and a demo asks for it three times. Each caller gets its own arrays."""
    return {k: np.array(v, copy=True) for k, v in _cached_request(pre.uri, user_id).items()}


@functools.lru_cache(maxsize=8)
def _cached_request(uri: str, user_id: Optional[str]) -> Dict[str, np.ndarray]:
    return _read_sample_request(af.Preprocessed.read(uri), user_id)


def _read_sample_request(pre: af.Preprocessed, user_id: Optional[str]) -> Dict[str, np.ndarray]:
    from preprocessing import requests, schema
    from preprocessing.sources import tables
    from trainer import data

    raw_dir = pre.inputs["raw"]
    cutoff = int(pre.get("split_cutoff_ts"))
    users = tables.read_table(af.join(raw_dir, tables.USERS_FILE))
    events: Dict[str, list] = {}
    for e in tables.read_interactions(af.join(raw_dir, tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    if user_id is None:  # the most active user with events on both sides of the cutoff
        both = [u for u, ev in events.items() if min(x["timestamp"] for x in ev) < cutoff <= max(
            x["timestamp"] for x in ev)]
        user_id = max(both or events, key=lambda u: (len(events[u]), u))
    evs = events.get(user_id, [])
    device = next((e.get("device") or "unknown" for e in evs if e["timestamp"] >= cutoff), "unknown")
    length = schema.history_length_of(data.transform_output(pre.uri).transformed_feature_spec())
    return requests.query_request(users.get(user_id, {"user_id": user_id}), evs, cutoff, device,
                                  history_length=length)


RETRIEVAL_MODELS = ("retrieval", "retrieval_brute_force")


def export_names(ranker: Optional[af.Ranker], cfg: Config) -> Tuple[str, ...]:
    """The models ``export`` stages: the two retrieval models, and with a ranker ranking and recommend
    (+ recommend_exact for stock TF Serving)."""
    names = RETRIEVAL_MODELS
    if ranker is not None:
        names += ("ranking", "recommend") + (("recommend_exact",) if cfg.export.recommend_exact else ())
    return names


def export_models(model: af.RetrievalModel, ranker: Optional[af.Ranker], cfg: Config, out: str,
                  names: Sequence[str], trained=None,
                  request: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, str]:
    """Stages the named models of ``export`` at ``<out>/<name>/1``; returns their directories.

    Each needs only the artifacts, so ``recsys demo`` stages some in a second interpreter
    (``recsys.background``): the retrieval models while the ranker trains, the ranking model beside
    the recommend model. ``export`` then takes them as ``staged``. ``request``: the warmup request
    (``sample_request`` of the model's data) when the caller has it already.
    """
    from trainer import export as trainer_export, export_recommend as xr

    unknown = [n for n in names if n not in export_names(ranker, cfg)]
    if unknown:
        raise ValueError(f"cannot export {unknown}: this export has {list(export_names(ranker, cfg))}")
    trained, vectors = restored(model, cfg, trained)
    if request is None:
        request = sample_request(preprocessed_of(model))
    rk = load_ranker(ranker, trained, cfg) if set(names) - set(RETRIEVAL_MODELS) else None
    tft, query, catalogue = trained.tft_output, trained.model.query_tower, trained.catalogue
    jobs = {
        "retrieval": lambda: trainer_export.export_retrieval(tft, query, catalogue.item_ids, vectors, out, 1,
                                                             cfg.export, kind="scann", warmup=request),
        "retrieval_brute_force": lambda: trainer_export.export_retrieval(tft, query, catalogue.item_ids, vectors, out,
                                                                         1, cfg.export, kind="brute_force",
                                                                         warmup=request),
        "ranking": lambda: xr.export_ranking(tft, rk, out, 1, warmup=xr.ranking_request(
            request, catalogue, list(range(min(3, catalogue.size))))),
        "recommend": lambda: xr.export_recommend(tft, query, vectors, catalogue, rk, out, 1, cfg.export, cfg.ranking,
                                                 warmup=request, exploration=cfg.exploration),
        # stock TF Serving (GPU tier, k8s/): exact retrieval, no ScaNN ops
        "recommend_exact": lambda: xr.export_recommend_exact(tft, query, vectors, catalogue, rk, out, 1, cfg.export,
                                                             cfg.ranking, warmup=request,
                                                             exploration=cfg.exploration),
    }
    paths: Dict[str, str] = {}
    for name in names:
        t0 = time.time()
        paths[name] = jobs[name]()
        log(f"[export] {name}: {paths[name]} ({time.time() - t0:.1f}s)")
    return paths


def export(model: af.RetrievalModel, ranker: Optional[af.Ranker], cfg: Config, out: str, trained=None,
           reuse: bool = False, staged: Optional[Dict[str, str]] = None) -> af.ExportedModels:
    """Stages every serving model (``export_names``) at ``<out>/<name>/1``. Nothing is visible to a server
    until ``push``. ``staged``: models ``export_models`` already wrote under ``out`` (in another process)."""
    fp = plan("export", cfg, model, ranker)
    hit = _cached(af.ExportedModels, out, fp, reuse)
    if hit:
        return hit
    names = export_names(ranker, cfg)
    paths = _checked_staged(out, staged or {}, names)
    todo = [n for n in names if n not in paths]
    request = sample_request(preprocessed_of(model))  # one read of the raw events: warmup and request.json
    if todo:
        paths.update(export_models(model, ranker, cfg, out, todo, trained=trained, request=request))
    af.write_json(af.join(out, "request.json"), {k: np.asarray(v).tolist() for k, v in request.items()})
    return af.ExportedModels(out, {"models": sorted(paths)}, _lineage(retrieval=model, ranker=ranker), fp,
                             "export").commit()


def _checked_staged(out: str, staged: Dict[str, str], names: Sequence[str]) -> Dict[str, str]:
    """``staged`` checked: models of this export, each complete at ``<out>/<name>/1``."""
    from trainer import publish

    for name, path in staged.items():
        want = af.join(out, name, "1")
        if name not in names or path != want or not publish.is_complete(want):
            raise af.ArtifactError(f"staged model {name!r} at {path!r} is not a complete model of this export "
                                   f"(expected one of {list(names)} at {want})")
    return dict(staged)


def example_request(exported: af.ExportedModels) -> Dict[str, np.ndarray]:
    """The request the export warmed its models with (one eval-period user), as arrays."""
    from preprocessing import schema

    raw = af.read_json(exported.path("request.json"))
    return {k: np.array(v, dtype=object if schema.COLUMNS[k].dtype == "string" else schema.COLUMNS[k].dtype)
            for k, v in raw.items()}


def bless(exported: af.ExportedModels, cfg: Config, out: str, serving_base_path: str,
          evaluation: Optional[af.Evaluation] = None, reuse: bool = False) -> af.Blessing:
    """TFX's Evaluator blessing: the candidate against the version being served, on the same fresh data.

    See ``recsys.blessing`` for the protocol and thresholds (``cfg.gate``).
    """
    from recsys import blessing

    served = blessing.served_version(serving_base_path, exported.names)
    fp = plan("bless", cfg, exported, evaluation, served=served)
    hit = _cached(af.Blessing, out, fp, reuse)
    if hit:
        return hit
    pre = preprocessed_of(af.RetrievalModel.read(exported.inputs["retrieval"]))
    decision = blessing.decide(exported, pre, serving_base_path, served, cfg.gate,
                               evaluation.metrics() if evaluation is not None else None)
    af.write_json(af.join(out, "blessing.json"), decision)
    log(f"[bless] {decision['message']}")
    props = {"blessed": decision["blessed"], "served_version": served or 0, "message": decision["message"]}
    return af.Blessing(out, props, _lineage(exported=exported, evaluation=evaluation), fp, "bless").commit()


def push(exported: af.ExportedModels, blessing: Optional[af.Blessing], base_path: str, out: str,
         version: int = 0, force: bool = False) -> af.PushedModel:
    """Publishes every staged model into ``<base_path>/<name>/<version>`` as one set, only when blessed
    (or ``force``, recorded as such). Versions are immutable and always newer than any served one."""
    from recsys import blessing as bl
    from trainer import publish

    ok = force or (blessing is not None and blessing.blessed)
    reason = ("forced by the operator (no blessing)" if force and not (blessing and blessing.blessed)
              else (blessing.get("message") if blessing is not None else "no blessing"))
    if not ok:
        log(f"[push] NOT pushed: {reason}")
        return af.PushedModel(out, {"pushed": False, "reason": reason}, _lineage(exported=exported, blessing=blessing),
                              exported.fingerprint, "push").commit()
    served = bl.latest_versions(base_path, exported.names)
    version = max(int(version) or int(time.time()), max(served.values(), default=0) + 1)
    paths = {}
    with publish.export_set(base_path):  # every model appears together, complete (trainer/publish.py)
        for name in exported.names:
            tmp = af.join(base_path, name, publish.tmp_name(version, base_path))  # servers ignore such names
            fileio.copy_tree(exported.model_dir(name), tmp)
            paths[name] = publish.publish_version(base_path, tmp, af.join(base_path, name, str(version)))
    log(f"[push] version {version} of {', '.join(sorted(paths))} -> {base_path}")
    return af.PushedModel(out, {"pushed": True, "version": version, "base_path": base_path, "models": paths,
                                "reason": reason}, _lineage(exported=exported, blessing=blessing),
                          exported.fingerprint, "push").commit()

