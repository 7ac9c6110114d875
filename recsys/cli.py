"""`recsys`: one command for every step, from raw logs to a served recommender.

  recsys demo                      synthetic data -> preprocess -> train -> evaluate -> export -> reload
  recsys demo --data PATH          the same on MovieLens files (100K, 1M or latest) or your interaction log
  recsys data synth                write raw synthetic tables to <workdir>/<run>/raw
  recsys preprocess                Beam + TF-Transform over the raw tables
  recsys train                     train (and evaluate) the two-tower retrieval model
  recsys evaluate                  re-evaluate the last trained model
  recsys tune [--trials N]         search the two-tower's settings on the train split's latest events (seen items
                                   excluded; the eval split never read) -> tuning/best.yaml for --config
  recsys export [--force]          stage SavedModels (ScaNN + brute force; + ranking and recommend once a ranker
                                   is trained), bless them against the served version, push only if blessed
  recsys train-ranking             train rankers re-ranking retrieval's top-N (+ GBDT) and compare them
  recsys explain [--user U]        why an item is recommended: top features, the history item behind it, DCN plot
  recsys train-similar             item2vec / Meta-Prod2Vec on the train split -> the similar_items model
  recsys loop [--rounds N]         the feedback loop against a running server with simulated users: serve ->
                                   feedback -> retrain -> bless -> push -> hot swap, a worse candidate blocked
  recsys report --logs P --events F   online metrics per version and day from request logs + events (A/B, HTML)
  recsys retrain --logs P --events F  continuous training: served data + feedback -> warm-started model, blessed
                                   against the served version, pushed only if blessed (a running server swaps)
  recsys simulate                  rounds of serve -> simulated feedback -> update: greedy vs epsilon-greedy vs
                                   Thompson (CTR, coverage per round; IPS/SNIPS vs the simulator's truth)
  recsys serve ...                 TF-Serving-compatible gRPC/REST server (see `recsys serve --help`)
  recsys query ...                 query a running server (local or real TF Serving)
  recsys query --similar ITEM      the items most similar to ITEM from a served similar_items model
  recsys pipeline compile|run-local|submit   the same stages as a Kubeflow / Vertex AI pipeline
  recsys bench NAME ...            benchmarks: ann, serving, quality, ranking, preprocessing, training, scale, cold-start, seeds

Every step takes `--config FILE` (YAML/JSON) and `--set section.key=value` overrides, e.g.
`recsys --set data.n_users=5000 --set train.epochs=5 demo`. The resolved config is written
next to each artifact.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from recsys.config import Config, apply_override, load_config

PASSTHROUGH = {"serve": "serving.server", "query": "serving.client", "pipeline": "pipelines.pipeline"}
BENCHMARKS = {"ann": "benchmarks.ann", "serving": "benchmarks.serving_latency", "quality": "benchmarks.quality",
              "preprocessing": "benchmarks.preprocessing", "training": "benchmarks.training",
              "ranking": "benchmarks.ranking", "scale": "benchmarks.scale", "pipeline": "benchmarks.pipeline",
              "cold-start": "benchmarks.cold_start", "seeds": "benchmarks.seeds"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML or JSON config file (see recsys/config.py for every key)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--workdir", help="where runs are written (default: ./runs)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="on errors, also print the Python traceback (errors from bad input print one line)")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every step end to end and print metrics and an example top-10")
    demo.add_argument("--data", help="real data instead of synthetic: a MovieLens directory (e.g. ml-latest-small) or "
                                     "your interaction log (a CSV file, or a directory with interactions.csv "
                                     "[+ items.csv, users.csv]; see `recsys data --help`)")
    demo.add_argument("--quick", action="store_true",
                      help="tiny sizes and in-sample ranker candidates, for smoke tests (~1-2 minutes)")
    data = sub.add_parser(
        "data", help="write raw tables from synthetic data, MovieLens or your own interaction log",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Writes <workdir>/<run>/raw/ (interactions, items, users, dead letters) from one source\n"
                    "(without one, the config's data.source and data.path, as the Kubernetes data Job runs it):\n"
                    "  synth      the generator (data.n_users, data.n_items, data.seed ...)\n"
                    "  movielens  a MovieLens directory: 100K (u.data), 1M/10M (ratings.dat) or latest (ratings.csv)\n"
                    "  csv        your interaction log: a CSV/TSV or JSON-lines file (.gz too), Parquet (a file\n"
                    "             or a directory of part files), or a directory with interactions.csv\n"
                    "             (.jsonl, .parquet ...) and optionally items.csv and users.csv\n\n"
                    "A log needs a header with a user id, an item id and a time (unix s/ms or ISO 8601);\n"
                    "rating, click and device are optional (no rating: every event is an engagement).\n"
                    "items.csv: title, genres, price, release; users.csv: age, country. Common header\n"
                    "names are recognised (userId, customer_id, sku, event_time ...); name others with\n"
                    "  --set data.columns=user_id=cust,item_id=sku,timestamp=t\n"
                    "(a file without a header line: --set data.header=user_id,item_id,rating,timestamp)\n"
                    "and give a rating scale other than 5 with --set data.rating_max=10, and times\n"
                    "no recognised format reads with --set 'data.time_format=%m/%d/%Y %H:%M' (strptime).\n"
                    "An event-type column (event, event_type, behavior_type ...) is read by type:\n"
                    "impressions and removals left out, purchases/carts/favourites click = 1, views\n"
                    "click = 0; keep only some types with --set data.event_types=transaction,addtocart\n"
                    "Malformed rows go to raw/dead_letter/ with why; more than data.max_bad_fraction is an error.\n"
                    "raw/statistics.json and statistics.png profile the data; a [data] warning line names\n"
                    "each quiet problem (double logging, a bot-sized account, import-time timestamps ...).")
    data.add_argument("kind", nargs="?", choices=["synth", "movielens", "csv"],
                      help="the source (above); without it, data.source and data.path of the config decide")
    data.add_argument("--path", help="MovieLens directory, or the log file / directory (movielens, csv)")
    step = dict(formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_parser("preprocess", help="Beam + TF-Transform over <run>/raw into <run>/preprocessed/v<N>", **step,
                   description="Reads <workdir>/<run>/raw (written by `recsys data`), validates every row (bad ones\n"
                               "go to dead_letter/), builds each event's history, splits by time (the latest\n"
                               "preprocess.eval_fraction of events is the eval split) and runs TF-Transform: analyzers\n"
                               "on the train split, the transform on both. Publishes <run>/preprocessed/v<N> with\n"
                               "TFRecords, the transform graph and stats; a failed run publishes nothing.\n"
                               "Settings: preprocess.* (history_length, eval_fraction, runner, beam_args ...).")
    sub.add_parser("train", help="train + evaluate retrieval on the latest preprocessed version", **step,
                   description="Trains the TFRS two-tower on the latest preprocessed version's train split (in-batch\n"
                               "softmax with logQ correction, early stopping on a 5% validation slice), then evaluates\n"
                               "it on the eval split beside popularity and the classic baselines (eval.baselines),\n"
                               "every model on the same queries with the user's earlier items excluded.\n"
                               "Settings: train.* (epochs, batch_size, min_steps_per_epoch, early_stopping_metric ...),\n"
                               "retrieval.* (history_encoder=mean|gru|transformer, sampled_negatives ...), eval.*.")
    tune = sub.add_parser(
        "tune", help="search the two-tower's settings (tune.*) on the train split's latest events", **step,
        description="A random search over the two-tower's settings (TFX's Tuner). The latest tune.holdout of the\n"
                    "train split's events are held out by time; each trial trains on the earlier events and is\n"
                    "scored on them as evaluation scores (full catalogue, the user's earlier items excluded),\n"
                    "beside popularity and the classic baselines fitted on the same events. Trial 1 is the\n"
                    "config as given. The eval split is never read, so `recsys --config <run>/tuning/best.yaml\n"
                    "train` is still measured on unseen events. Writes tuning.json, best.yaml, tuning.png.\n"
                    "--holdout-by user holds out each user's latest train event instead (leave-last-out), so\n"
                    "every user counts in the score, not only those active at the end of the log.\n"
                    "Settings: tune.* (trials, holdout, holdout_by, metric, epochs, space, seed).")
    tune.add_argument("--trials", type=int, help="number of trials, the config as given included (tune.trials)")
    tune.add_argument("--space", action="append", metavar="KEY=V1,V2",
                      help="a setting and its values, repeatable, e.g. --space retrieval.temperature=0.05,0.1 "
                           "(replaces tune.space)")
    tune.add_argument("--metric", help="recall@K or ndcg@K (tune.metric)")
    tune.add_argument("--holdout-by", choices=("time", "user"),
                      help="time: the latest tune.holdout of train events; user: each user's latest (tune.holdout_by)")
    tune.add_argument("--out", help="output directory (default: <run>/tuning)")
    sub.add_parser("evaluate", help="evaluate the last trained retrieval model", **step,
                   description="Re-runs the evaluation of the last trained retrieval model (the table `recsys train`\n"
                               "prints), e.g. after changing eval.* (ks, baselines, max_queries, bootstrap).")
    exp = sub.add_parser("export", help="stage SavedModels, bless them against the served version (gate.*), "
                                        "push to <model_base_path>/<name>/<version> only if blessed")
    exp.add_argument("--force", action="store_true", help="push without the blessing (recorded as forced)")
    rank = sub.add_parser("train-ranking", help="train + evaluate rankers on retrieval's top-N candidates")
    rank.add_argument("--rankers", default="", help="comma list of dcn, dcn_parallel, dcn_lowrank, wide_deep, "
                                                     "deepfm (default: ranking.model)")
    rank.add_argument("--gbdt", action="store_true", help="also train the gradient-boosted-trees baseline")
    expl = sub.add_parser("explain", help="explain a recommendation with the trained ranker (ranking.model)")
    expl.add_argument("--user", help="user id (default: the demo's example user)")
    expl.add_argument("--item", help="item id (default: the user's top recommendation)")
    expl.add_argument("--out", help="directory for the JSON and the DCN plot (default: <run>/explain)")
    sub.add_parser("train-similar", help="item2vec (+ genres: Meta-Prod2Vec) on the train split, export "
                                         "similar_items (settings: item2vec.*)")
    ret = sub.add_parser("retrain", help="one round of continuous training: the served model's data + request logs "
                                         "joined with events -> warm-started two-tower (+ ranker) -> blessing "
                                         "against the served version -> push (exit 5 when blocked)")
    ret.add_argument("--logs", action="append", required=True, help="request-log filename_prefix or .tfrecord "
                                                                     "(repeatable)")
    ret.add_argument("--events", action="append", required=True, help="events JSON Lines file (repeatable)")
    ret.add_argument("--force", action="store_true", help="push without the blessing (recorded as forced)")
    lp = sub.add_parser("loop", help="the feedback loop end to end with simulated users (synthetic data): rounds of "
                                     "serve -> feedback -> retrain -> bless -> push -> hot swap, then a worse "
                                     "candidate the gate must block, and the A/B report")
    lp.add_argument("--rounds", type=int, default=2, help="retrain rounds (default 2); one more round measures the "
                                                          "last version")
    lp.add_argument("--model", default="retrieval", choices=("retrieval", "recommend"),
                    help="the served model the users query (recommend needs a trained ranker)")
    lp.add_argument("--explore-epsilon", type=float, default=None,
                    help="> 0: every version gets the recommend model's epsilon-greedy `explore` signature and half "
                         "the users (by id hash) call it, so each round shows exploration's effect on coverage and "
                         "CTR beside greedy users (needs --model recommend; default: the config's exploration.*)")
    rep = sub.add_parser("report", help="online metrics per model version and day from request logs and events: "
                                        "CTR, conversion, watch time, guardrails, A/B interval; JSON, PNG, HTML")
    rep.add_argument("--logs", action="append", required=True, help="request-log filename_prefix or .tfrecord "
                                                                     "(repeatable)")
    rep.add_argument("--events", action="append", required=True, help="events JSON Lines file (repeatable)")
    rep.add_argument("--items", help="items table for genres and catalogue (default: <run>/raw/items.jsonl)")
    rep.add_argument("--interactions", help="raw interactions table for popularity (default: the events)")
    rep.add_argument("--out", help="output directory (default: <run>/report)")
    rep.add_argument("--baseline", help="A/B baseline version, e.g. recommend/v1 (default: the older of two)")
    rep.add_argument("--candidate", help="A/B candidate version")
    rep.add_argument("--estimate-bias", action="store_true", help="propensities from the logs (else 1/rank prior)")
    rep.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the A/B interval")
    sim = sub.add_parser("simulate", help="exploration over rounds with simulated users (settings: exploration.*): "
                                          "CTR and coverage per round, off-policy estimates; table, JSON, PNG")
    sim.add_argument("--rounds", type=int, default=10)
    sim.add_argument("--users", type=int, default=500)
    sim.add_argument("--items", type=int, default=1500)
    sim.add_argument("--policies", default="greedy,epsilon_greedy,thompson", help="comma list")
    sim.add_argument("--retrieval-noise", type=float, default=1.0, help="how imperfect the candidate source is")
    sim.add_argument("--item-effect", type=float, default=0.3, help="simulated users' weight on an item's own "
                                                                    "appeal (the generator's interactions: 1.0)")
    sim.add_argument("--out", help="output directory (default: <run>/simulate)")
    for name in PASSTHROUGH:
        sub.add_parser(name, help=f"see `recsys {name} --help`", add_help=False)
    bench = sub.add_parser("bench", help=f"run a benchmark: {', '.join(BENCHMARKS)}", add_help=False)
    bench.add_argument("name", nargs="?", choices=sorted(BENCHMARKS))
    return p


def _config(args) -> Config:
    cfg = load_config(args.config, args.set)
    if args.workdir:
        cfg.workdir = args.workdir
    return cfg


def _quiet_python() -> None:
    """Library noise off (deprecation/future warnings, Beam's optional-package notices); --verbose keeps it."""
    import logging
    import warnings

    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("", "absl", "apache_beam", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("absl", "tensorflow"):  # absl sets its logger's level again when a library parses absl flags
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
            logger.addFilter(_ErrorsOnly())


class _ErrorsOnly:
    """A logging filter that keeps errors only: unlike a level, nothing resets it."""

    @staticmethod
    def filter(record) -> bool:
        return record.levelno >= 40  # logging.ERROR


def _quiet_tf() -> None:
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


# Exit codes: user errors are one line on stderr (problem + fix), distinct from crashes (which print
# the traceback). --verbose adds the traceback to user errors too.
EXIT_CRASH = 1        # a bug or an unexpected failure: traceback printed
EXIT_USAGE = 2        # bad command line (argparse)
EXIT_CONFIG = 3       # bad --config file, --set key or value
EXIT_INPUT = 4        # bad or missing input data; a step run before the step that writes its inputs
EXIT_BLOCKED = 5      # the blessing blocked the candidate: nothing was pushed
EXIT_INTERRUPTED = 130


def _user_error(e: BaseException):
    """(exit code, one-line message) for errors caused by the user's input; None for anything else."""
    from recsys.config import ConfigError

    if isinstance(e, ConfigError):
        return EXIT_CONFIG, str(e)
    try:
        from preprocessing.sources.tables import DataError
    except ImportError:  # pragma: no cover
        DataError = ()  # noqa: N806
    if DataError and isinstance(e, DataError):
        return EXIT_INPUT, str(e)
    from recsys.artifacts import ArtifactError
    from recsys.steps import NotBlessed

    if isinstance(e, NotBlessed):
        return EXIT_BLOCKED, str(e)
    if isinstance(e, ArtifactError):
        return EXIT_INPUT, str(e)
    from trainer.covisit import TooLarge  # no TensorFlow at import

    if isinstance(e, TooLarge):  # data beyond what the exact co-visitation builder finishes in time
        return EXIT_INPUT, str(e)
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        if e.filename and e.strerror:
            return EXIT_INPUT, f"{e.strerror}: {e.filename}"
        return EXIT_INPUT, str(e)
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """`recsys ...`; returns the exit code (see EXIT_*)."""
    argv = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    verbose = any(a in ("-v", "--verbose") for a in argv[:_command_index(argv)])
    if not verbose:  # TensorFlow's C++ start-up notices (CUDA probes) would bury progress and errors
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        # gRPC core logs connection events ("Got goaway" when a benchmark's server stops) at INFO
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        _quiet_python()
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (the one place errors become exit codes)
        known = _user_error(e)
        if known is None:
            import traceback

            traceback.print_exc()
            print(f"recsys: internal error ({type(e).__name__}); the traceback above says where", file=sys.stderr)
            return EXIT_CRASH
        code, message = known
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"recsys: error: {' '.join(message.split())}", file=sys.stderr)
        return code


def run() -> None:
    """The ``recsys`` console script: ``main``, then exit without the interpreter's teardown for the batch
    commands. Tearing down frees TensorFlow's traced graphs object by object: 3-4 s after a demo, for
    nothing. Output is flushed and the ``atexit`` handlers run first, as with ``sys.exit``. The server,
    client, pipeline and benchmark commands exit normally (they own their shutdown)."""
    argv = sys.argv[1:]
    code = main(argv)
    i = _command_index(argv)
    if i < len(argv) and (argv[i] in PASSTHROUGH or argv[i] == "bench"):
        sys.exit(code)
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # noqa: SLF001  (what sys.exit would run; os._exit skips it)
    os._exit(code)


GLOBAL_WITH_VALUE = ("--config", "--set", "--workdir")


def _hoist_global_options(argv: List[str]) -> List[str]:
    """``recsys data csv --path LOG --set data.rating_max=10`` means what it says: global options given after
    one of our own subcommands move in front of it (serve, query and bench keep theirs: they own their flags)."""
    i = _command_index(argv)
    if i >= len(argv) or argv[i] in PASSTHROUGH or argv[i] == "bench":
        return argv
    moved, rest, j = [], [], i + 1
    while j < len(argv):
        tok = argv[j]
        if tok in GLOBAL_WITH_VALUE and j + 1 < len(argv):
            moved += argv[j:j + 2]
            j += 2
            continue
        if tok.split("=", 1)[0] in GLOBAL_WITH_VALUE or tok in ("-v", "--verbose"):
            moved.append(tok)
        else:
            rest.append(tok)
        j += 1
    return argv[:i] + moved + argv[i:i + 1] + rest


def _command_index(argv: List[str]) -> int:
    """Index of the subcommand in ``argv`` (global options come before it)."""
    for i, tok in enumerate(argv):
        if not tok.startswith("-") and (i == 0 or argv[i - 1] not in GLOBAL_WITH_VALUE):
            return i
    return len(argv)


def _main(argv: List[str]) -> int:
    # serve/query/bench own their flags: hand everything after the subcommand over untouched
    i = _command_index(argv)
    tok = argv[i] if i < len(argv) else ""
    if tok in PASSTHROUGH or tok == "bench":
        if tok == "bench":
            if i + 1 >= len(argv) or argv[i + 1] not in BENCHMARKS:
                print(f"usage: recsys bench {{{','.join(sorted(BENCHMARKS))}}} [--help]", file=sys.stderr)
                return EXIT_USAGE
            module, rest = BENCHMARKS[argv[i + 1]], argv[i + 2:]
        else:
            module, rest = PASSTHROUGH[tok], argv[i + 1:]
            if tok == "query" and any(a == "--similar" or a.startswith("--similar=") for a in rest):
                return query_similar(rest)
        import importlib

        return int(importlib.import_module(module).main(rest) or 0)
    args = _parser().parse_args(argv)
    cfg = _config(args)
    _quiet_tf()
    from recsys import steps
    from recsys.layout import RunLayout

    if args.command == "demo":
        return demo(cfg, args.data, args.quick)
    if args.command == "data":
        if args.kind in ("movielens", "csv"):
            cfg.data.source, cfg.data.path = args.kind, args.path or cfg.data.path
        elif args.kind == "synth":
            cfg.data.source = "synthetic"
        elif args.path:   # `recsys data --path X`: the config's source, read from X
            cfg.data.path = args.path
        steps.make_raw(cfg)
    elif args.command == "preprocess":
        steps.preprocess(cfg)
    elif args.command == "train":
        steps.latest_preprocessed(cfg)   # a clear error when `recsys preprocess` has not run
        trained = steps.train(cfg)
        if trained.out_dir == RunLayout(cfg).retrieval:  # workers other than the chief trained into scratch
            steps.evaluate(cfg, trained)
    elif args.command == "tune":
        return tune(cfg, args)
    elif args.command == "evaluate":
        _require_trained(cfg)
        steps.evaluate(cfg)
    elif args.command == "export":
        _require_trained(cfg)
        paths = steps.export(cfg, force=args.force)
        steps.log("[export] serving: " + ", ".join(f"{k}={v}" for k, v in sorted(paths.items())
                                                   if k not in ("scann", "brute_force")))
    elif args.command == "train-ranking":
        _require_trained(cfg)
        steps.train_ranking(cfg, rankers=[r for r in args.rankers.split(",") if r], gbdt=args.gbdt)
    elif args.command == "explain":
        return explain(cfg, args.user, args.item, args.out)
    elif args.command == "train-similar":
        steps.latest_preprocessed(cfg)   # a clear error when `recsys preprocess` has not run
        return train_similar(cfg)
    elif args.command == "retrain":
        out = steps.retrain(cfg, args.logs, args.events, force=args.force)
        if not out["pushed"]:
            raise steps.NotBlessed(f"round {out['round']} not pushed: {out['reason']} (details: {out['blessing']}/"
                                   f"blessing.json; `recsys retrain --force` pushes anyway)")
        steps.log(f"[retrain] round {out['round']} pushed as version {out['version']}: "
                  + ", ".join(f"{k}={v}" for k, v in sorted((out["models"] or {}).items())))
    elif args.command == "loop":
        from recsys import loop

        if args.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        out = loop.run_loop(cfg, rounds=args.rounds, model=args.model, log=steps.log,
                            explore_epsilon=args.explore_epsilon)
        print(loop.format_summary(out))
    elif args.command == "report":
        from recsys import report

        rep, paths = report.run_report(
            args.logs, args.events, args.items or os.path.join(RunLayout(cfg).raw, "items.jsonl"),
            args.out or os.path.join(cfg.run_dir, "report"), interactions_path=args.interactions,
            baseline=args.baseline, candidate=args.candidate, estimate_bias=args.estimate_bias,
            n_boot=args.n_boot, max_bad_fraction=cfg.data.max_bad_fraction)
        print(report.format_table(rep))
        steps.log("[report] -> " + ", ".join(f"{k}={v}" for k, v in paths.items()))
    elif args.command == "simulate":
        from recsys import simulate

        try:
            result = simulate.simulate(cfg.exploration, args.out or os.path.join(cfg.run_dir, "simulate"),
                                       users=args.users, items=args.items, rounds=args.rounds,
                                       policies=[p for p in args.policies.split(",") if p],
                                       retrieval_noise=args.retrieval_noise, data_seed=cfg.data.seed,
                                       item_effect=args.item_effect)
        except ValueError as e:
            print(f"recsys: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(simulate.format_table(result))
        steps.log("[simulate] -> " + ", ".join(f"{k}={v}" for k, v in result["paths"].items()))
    return 0


def tune(cfg: Config, args) -> int:
    """Runs the trials on the latest preprocessed version; prints the table and where best.yaml is."""
    from recsys import steps
    from trainer import tune as tune_mod

    if args.trials is not None:
        apply_override(cfg, "tune.trials", args.trials)
    if args.space:
        cfg.tune.space = tuple(args.space)
    if args.metric:
        cfg.tune.metric = args.metric
    if args.holdout_by:
        cfg.tune.holdout_by = args.holdout_by
    tune_mod.parse_space(cfg.tune.space)   # a bad setting fails now, before anything is read
    tune_mod.check_metric(cfg.tune.metric, cfg.eval.ks)
    version_dir = steps.latest_preprocessed(cfg)   # a clear error when `recsys preprocess` has not run
    out = args.out or tune_mod.default_out_dir(cfg.run_dir)
    result = tune_mod.run(cfg, version_dir, out, log=steps.log)
    print(tune_mod.table(result))
    steps.log(f"[tune] -> {out}/tuning.json, best.yaml, tuning.png\n"
              f"       use it: recsys --config {out}/best.yaml train")
    return 0


def train_similar(cfg: Config) -> int:
    """Trains item2vec, exports similar_items, prints the neighbours of the most popular item from the export."""
    import numpy as np

    from preprocessing.sources import tables
    from recsys import steps

    out = steps.train_similar(cfg)
    result = steps.reload_in_subprocess(out["path"], {"item_ids": np.array([out["example"]], dtype=object)})
    version_dir = steps.latest_preprocessed(cfg)
    items = tables.read_table(os.path.join(version_dir, tables.ITEMS_FILE))
    title = lambda i: items.get(i, {}).get("item_title", "?")[:40]  # noqa: E731
    print(f"\nItems most similar to {out['example']} ({title(out['example'])}), exported model, fresh process:")
    for rank, (i, s) in enumerate(zip(result["item_ids"][0][:10], result["scores"][0][:10]), start=1):
        print(f"  {rank:2d}. {i:>7}  {title(i):40}  cosine={s:.3f}")
    print(f"\nserve it: recsys serve --model_name similar_items --model_base_path {os.path.dirname(out['path'])}\n"
          f"query it: recsys query --similar {out['example']}")
    return 0


def query_similar(argv: List[str]) -> int:
    """`recsys query --similar ITEM[,ITEM...]`: calls a served similar_items model (local server or TF Serving)."""
    import numpy as np

    from serving.client import ServingClient
    from serving.errors import ServingError

    p = argparse.ArgumentParser(prog="recsys query --similar", description=query_similar.__doc__)
    p.add_argument("--similar", required=True, help="item id(s), comma-separated")
    p.add_argument("--k", type=int, default=10, help="neighbours to show per item")
    p.add_argument("--model", default="similar_items", help="served model name")
    p.add_argument("--version", default=None, help="model version number or label (default: latest)")
    p.add_argument("--address", default=os.environ.get("RECSYS_SERVING_ADDRESS", "localhost:8500"),
                   help="gRPC host:port")
    p.add_argument("--rest", default=None, help="use REST at this base URL instead, e.g. http://localhost:8501")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print the outputs as JSON")
    args = p.parse_args(argv)
    queries = [q.strip() for q in args.similar.split(",") if q.strip()]
    if not queries:
        p.error("--similar needs at least one item id")
    where = f"rest {args.rest}" if args.rest else f"grpc {args.address}"
    client = ServingClient(None if args.rest else args.address, args.rest, timeout=args.timeout)
    try:
        result = client.predict(args.model, {"item_ids": np.array(queries, dtype=object)}, version=args.version)
    except (ServingError, ValueError, OSError) as e:
        print(f"error ({where}): {e}", file=sys.stderr)
        return EXIT_INPUT
    finally:
        client.close()
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)  # noqa: E731
    ids = [[text(v) for v in row[:args.k]] for row in np.asarray(result["item_ids"])]
    scores = np.asarray(result["scores"])[:, :args.k].tolist()
    if args.json:
        print(json.dumps({"item_ids": ids, "scores": scores}))
        return 0
    for q, row, sc in zip(queries, ids, scores):
        if not any(row):
            print(f"{q}: unknown to model {args.model}")
            continue
        print(f"items similar to {q} (model={args.model}, {where}):")
        for rank, (i, s) in enumerate(zip(row, sc), start=1):
            print(f"  {rank:2d}. {i}  {s:.4f}")
    return 0


def _require_trained(cfg: Config) -> None:
    """A clear error when the steps before `train` (or `train` itself) have not run for this run."""
    from recsys import steps

    steps.latest_preprocessed(cfg)
    steps.retrieval_artifact(cfg)


def explain(cfg: Config, user: Optional[str], item: Optional[str], out_dir: Optional[str]) -> int:
    from preprocessing.sources import tables
    from recsys import steps
    from trainer import evaluate_retrieval as er, explain as ex

    _require_trained(cfg)
    if not steps.has_ranker(cfg):
        raise FileNotFoundError(f"no trained ranker {cfg.ranking.model!r} in {cfg.run_dir}: "
                                f"run `recsys train-ranking` first")
    version_dir = steps.latest_preprocessed(cfg)
    trained = steps.load_trained(cfg)
    item_vectors = er.catalogue_vectors(trained)
    request = steps.sample_request(cfg, version_dir, user)
    result = steps.explain(cfg, trained, item_vectors, steps.load_ranker(cfg, trained), request, item, out_dir)
    print(ex.format_explanation(result, tables.read_table(os.path.join(version_dir, tables.ITEMS_FILE))))
    print(f"[explain] -> {result.get('json')}")
    return 0


def quick(cfg: Config) -> None:
    """Smoke-test sizes. The ranker trains on the main retriever's own candidates (``in_sample``): a second,
    out-of-fold retriever would cost another model trace and fit for numbers this small data cannot back.
    Its pairs come from 2,500 of the ~7,200 train events (~20K pairs instead of ~56K)."""
    cfg.data.n_users, cfg.data.n_items, cfg.data.events_per_user = 400, 300, 20
    cfg.train.epochs, cfg.train.batch_size = 3, 256
    cfg.ranking.candidates, cfg.ranking.max_train_events = "in_sample", 2500


def demo(cfg: Config, data_dir: Optional[str] = None, is_quick: bool = False) -> int:
    """Every step on the embedded synthetic data (or MovieLens files), with a summary at the end."""
    from preprocessing.utf8 import to_str
    from recsys import steps

    t0 = time.time()
    if data_dir:
        from preprocessing.sources import detect

        cfg.data.source, cfg.data.path = detect(data_dir), data_dir
    if is_quick:
        quick(cfg)
    steps.log(f"[demo] run directory: {cfg.run_dir}")
    from recsys.background import Worker

    # A second interpreter (the other core) imports TensorFlow while this one preprocesses. It then stages
    # the retrieval models while the ranker trains here, then the ranking model and the explanation of the
    # example's top item while the recommend model is staged, blessed and pushed here. A third, fresh one
    # loads each staged model as soon as it exists and answers the example request.
    with Worker() as worker:
        steps.make_raw(cfg)
        version_dir = steps.preprocess(cfg)
        request = steps.sample_request(cfg, version_dir)
        reloads = steps.FreshReloads()  # imports TensorFlow while the retrieval model trains
        try:
            trained = steps.train(cfg, version_dir)
            ev = steps.evaluate(cfg, trained)
            version = steps.new_export_version(cfg)
            steps.stage_models_in(worker, cfg, version, ["retrieval", "retrieval_brute_force"])
            # second stage: a ranker trained on retrieval candidates, then every model staged, blessed, pushed
            ranking = steps.train_ranking(cfg, trained)
            staged = worker.result()
            reloads.reload(staged["retrieval"], request)
            steps.stage_models_in(worker, cfg, version, ["ranking"])
            steps.explain_in(worker, cfg)  # next in the worker, while the models are blessed and pushed here
            staged.update(steps.stage_models(cfg, version, ["recommend"], trained=trained))
            reloads.reload(staged["recommend"], request)
            staged.update(worker.result())
            paths = steps.export(cfg, trained, version=version, staged=staged)  # + blessed and pushed
            exact = steps.in_process(paths["brute_force"], request)
            explanation = worker.result()
            fresh, recommended = reloads.results()
        except BaseException:
            reloads.kill()
            raise
    user = str(request["user_id"][0])
    top10 = fresh["item_ids"][0][:10]
    overlap = len(set(top10) & set(to_str(exact["item_ids"][0][:10]).tolist())) / 10.0
    _print_example(cfg, version_dir, user, request, fresh)
    _print_recommend(version_dir, user, recommended)
    from preprocessing.sources import tables
    from trainer.explain import format_explanation

    print(format_explanation(explanation, tables.read_table(os.path.join(version_dir, tables.ITEMS_FILE))) + "\n")
    wall = time.time() - t0
    summary = {"wall_seconds": round(wall, 1), "run_dir": cfg.run_dir, "exports": paths,
               "metrics": ev["results"], "example_user": user, "example_top10": top10,
               "scann_vs_brute_force_top10_overlap": overlap, "ranking_metrics": ranking["results"],
               "recommend_top10": recommended["item_ids"][0][:10],
               "explanation": {k: explanation[k] for k in ("item_id", "top_features", "because_you_watched")}}
    from recsys.artifacts import join, write_json

    write_json(join(cfg.run_dir, "demo_summary.json"), summary)
    steps.log(f"[demo] ScaNN vs brute-force top-10 overlap for {user}: {overlap:.1f}")
    from serving.client import query_command

    served = "recommend" if "recommend" in paths else "retrieval"
    ask = query_command(served, request)
    steps.log(f"[demo] done in {wall:.0f}s; models under {cfg.model_base_path}\n"
              f"       serve one: recsys serve --model_name {served} "
              f"--model_base_path {os.path.dirname(paths[served])}"
              + (f"\n       then ask it over gRPC what it answered above for {user}:\n       {ask}" if ask else ""))
    return 0


def _print_recommend(version_dir: str, user: str, result) -> None:
    from preprocessing.sources import tables

    items = tables.read_table(os.path.join(version_dir, tables.ITEMS_FILE))
    print(f"\nTop-10 from the exported recommend model (ScaNN -> ranker, one call, fresh process) for {user}:")
    for rank, i in enumerate(range(min(10, len(result["item_ids"][0]))), start=1):
        item = result["item_ids"][0][i]
        print(f"  {rank:2d}. {item:>7}  {items.get(item, {}).get('item_title', '?')[:34]:34}  "
              f"score={result['scores'][0][i]:.3f}  retrieval rank={result['retrieval_ranks'][0][i]:3d}  "
              f"stage={result['stage'][0][i]}")
    print()


def _print_example(cfg: Config, version_dir: str, user: str, request, result) -> None:
    from preprocessing.sources import tables

    items = tables.read_table(os.path.join(version_dir, tables.ITEMS_FILE))
    name = lambda i: f"{i:>7}  {items.get(i, {}).get('item_title', '?')[:40]:40}  {items.get(i, {}).get('item_genres', '')}"  # noqa: E731
    history = [h for h in request["history_item_ids"][0].tolist() if h][-5:]
    print(f"\nExample: user {user}, last {len(history)} items before the eval period:")
    for h in history:
        print("   ", name(h))
    print("Top-10 from the exported ScaNN model (fresh process):")
    for rank, (i, s) in enumerate(zip(result["item_ids"][0][:10], result["scores"][0][:10]), start=1):
        print(f"  {rank:2d}. {name(i)}  score={s:.3f}")
    print()


if __name__ == "__main__":
    run()
