"""Kubeflow Pipelines v2 / Vertex AI Pipelines: ingest -> preprocess -> train -> evaluate -> ranker ->
export -> bless -> push, every hand-off a typed artifact.

    recsys pipeline compile --out pipeline.yaml
    recsys pipeline run-local --workdir /tmp/kfp [--set train.epochs=2]
    recsys pipeline submit --project P --region R --pipeline-root gs://B/root --image IMAGE \\
        --service-account SA --serving-model-base-path gs://B/models [--dry-run]

Continuous training (pipelines/retrain_pipeline.py, the DAG `recsys retrain` runs in process):

    recsys pipeline compile --retrain --out retrain.yaml
    recsys pipeline run-local --retrain --workdir /tmp/kfp --raw-uri RAW --previous-model-uri MODEL \\
        --logs LOG_PREFIX --events EVENTS.jsonl --serving-model-base-path /tmp/kfp/models
    recsys pipeline submit --retrain ... --raw-uri gs://.. --previous-model-uri gs://.. --logs gs://.. --events gs://..

Components (pipelines/components.py) call ``recsys.stages`` through pipelines/runtime.py, the same
functions the `recsys` CLI composes, so both produce the same artifacts for the same config. Caching
is on: KFP reuses a task whose inputs (the config JSON, the input artifacts) and image are unchanged;
with an ``artifact_root`` the stages also reuse content-addressed artifacts themselves (this is what
makes ``run-local`` re-runs skip unchanged steps). ``bless`` compares the candidate with the version
being served under ``serving_model_base_path``; ``push`` publishes only a blessed candidate.
"""

import argparse
import io
import json
import os
import re
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence

from kfp import compiler, dsl

from pipelines import components
from pipelines.retrain_pipeline import RETRAIN_PIPELINE_NAME, compile_retrain_pipeline, retrain_pipeline
from pipelines.runtime import TINY_OVERRIDES, config_json, resolve_config

PIPELINE_NAME = "recsys"
STEPS = ("ingest", "preprocess", "tune", "train-retrieval", "evaluate", "train-ranker", "export", "bless", "push")

# The DAG in order, for pipelines/in_process.py: (task, component, {input: (producer task, output)},
# {output: artifact class}); an input is an artifact or, like the tuned ``config``, an output parameter.
# tests/pipelines/test_pipeline.py checks it against the compiled pipeline.
TUNED = ("tune", "config")   # every task after the Tuner runs with the config it returns
PIPELINE_TASKS = (
    ("ingest", "ingest", {}, {"raw": "Dataset"}),
    ("preprocess", "preprocess", {"raw": ("ingest", "raw")}, {"preprocessed": "Dataset"}),
    ("tune", "tune", {"preprocessed": ("preprocess", "preprocessed")}, {"hyperparameters": "Artifact"}),
    ("train-retrieval", "train_retrieval", {"preprocessed": ("preprocess", "preprocessed"), "config": TUNED},
     {"model": "Model"}),
    ("evaluate", "evaluate", {"model": ("train-retrieval", "model"), "config": TUNED},
     {"evaluation": "Artifact", "metrics": "Metrics"}),
    ("train-ranker", "train_ranker", {"model": ("train-retrieval", "model"), "config": TUNED},
     {"ranker": "Model", "evaluation": "Artifact", "metrics": "Metrics"}),
    ("export", "export", {"model": ("train-retrieval", "model"), "ranker": ("train-ranker", "ranker"), "config": TUNED},
     {"exported": "Model"}),
    ("bless", "bless", {"exported": ("export", "exported"), "evaluation": ("evaluate", "evaluation"), "config": TUNED},
     {"blessing": "Artifact"}),
    ("push", "push", {"exported": ("export", "exported"), "blessing": ("bless", "blessing")}, {"pushed": "Model"}),
)


@dsl.pipeline(name=PIPELINE_NAME,
              description="Raw interactions -> Beam+TFT -> Tuner (optional) -> TFRS two-tower -> evaluation beside "
                          "classic baselines -> ranker -> staged SavedModels -> blessing against the served version "
                          "-> push")
def recsys_pipeline(config: str, serving_model_base_path: str, artifact_root: str = "", tune_trials: int = 0,
                    image: str = components.DEFAULT_IMAGE):
    """``config``: the resolved config as JSON (`recsys pipeline` builds it from --config/--set).
    ``serving_model_base_path``: what TF Serving loads (``<base>/<name>/<version>``). ``artifact_root``:
    optional home of content-addressed stage artifacts (reused across runs); empty = KFP's own URIs.
    ``tune_trials``: trials of the Tuner (tune.*), whose best settings every later task runs with; 0 = none.
    ``image``: the project image every task runs in."""
    common = dict(config=config, artifact_root=artifact_root)
    ingest = components.ingest(**common).set_display_name("ingest")
    pre = components.preprocess(raw=ingest.outputs["raw"], **common).set_display_name("preprocess")
    tuner = components.tune(preprocessed=pre.outputs["preprocessed"], tune_trials=tune_trials, **common)
    tuner.set_display_name("tune").set_cpu_limit("4").set_memory_limit("16G")
    tuned = dict(common, config=tuner.outputs["config"])
    train = components.train_retrieval(preprocessed=pre.outputs["preprocessed"], **tuned)
    train.set_display_name("train retrieval").set_cpu_limit("4").set_memory_limit("16G")
    for task in [ingest, pre, tuner, train] + components.model_to_push(train.outputs["model"], tuned,
                                                                       serving_model_base_path):
        task.set_container_image(image)


def compile_pipeline(out: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    compiler.Compiler().compile(recsys_pipeline, package_path=out)
    return out


# what run-local shows on the terminal unless --verbose (everything goes to <workdir>/run-local.log)
PROGRESS = re.compile(r"^\s*(\[(cache|data|feedback|preprocess|tune|train|evaluate|ranking[^\]]*|export|bless|push)\]|"
                      r".* vs best other |.*Task .* finished)")


class _Progress(io.TextIOBase):
    """stdout that keeps every line in a log file and shows only progress lines (kfp.local echoes each
    task's whole executor input and library INFO logs)."""

    def __init__(self, log, term):
        self.log, self.term, self.pending = log, term, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if PROGRESS.match(line):
                self.term.write(re.sub(r"\x1b\[[0-9;]*m", "", line).strip() + "\n")
                self.term.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def run_local(workdir: str, overrides: Sequence[str] = (), serving_model_base_path: str = "",
              config_file: str = "", artifact_root: Optional[str] = None, verbose: bool = False,
              retrain: Optional[Dict] = None, tune_trials: int = 0) -> Dict:
    """Runs the whole pipeline with kfp's local SubprocessRunner in this interpreter's environment.

    Artifacts are content-addressed under ``<workdir>/artifacts`` (so a second run reuses unchanged
    stages); the serving base path defaults to ``<workdir>/models``. ``retrain``: run the retrain pipeline
    with these parameters instead (raw_uri, previous_model_uri, request_logs, events, ...). ``tune_trials``:
    the main pipeline's Tuner (0 = no tuning).
    Raises RuntimeError when a step fails.
    """
    import contextlib

    from kfp import local

    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    cfg = resolve_config(config_file, overrides)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.join(workdir, "kfp-local-root"))
    base = os.path.abspath(serving_model_base_path) if serving_model_base_path else os.path.join(workdir, "models")
    root = os.path.join(workdir, "artifacts") if artifact_root is None else artifact_root
    log_path = os.path.join(workdir, "run-local.log")
    t0 = time.time()
    with open(log_path, "a") as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kfp.local warns that the image is not used (by design here)
        out = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_Progress(log, sys.stdout))
        with out:
            if retrain is not None:
                retrain_pipeline(config=config_json(cfg), serving_model_base_path=base, artifact_root=root, **retrain)
            else:
                recsys_pipeline(config=config_json(cfg), serving_model_base_path=base, artifact_root=root,
                                tune_trials=tune_trials)
    return {"wall_seconds": round(time.time() - t0, 1), "workdir": workdir, "serving_model_base_path": base,
            "artifact_root": root, "log": log_path}


def vertex_job(template: str, project: str, region: str, pipeline_root: str, image: str, config: str,
               serving_model_base_path: str, artifact_root: str = "", display_name: str = PIPELINE_NAME,
               labels: Optional[Dict[str, str]] = None, credentials=None, extra_params: Optional[Dict] = None):
    """The Vertex AI ``PipelineJob`` for a compiled template (caching on); nothing is sent until ``submit``.
    ``extra_params``: the template's other parameters (the retrain pipeline's URIs and log locations)."""
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(
        display_name=display_name, template_path=template, pipeline_root=pipeline_root, project=project,
        location=region, enable_caching=True, labels=labels or {"app": "recsys"}, credentials=credentials,
        parameter_values={"config": config, "serving_model_base_path": serving_model_base_path,
                          "artifact_root": artifact_root, "image": image, **(extra_params or {})})


def vertex_request(job, service_account: str = "") -> Dict:
    """The body of the ``projects.locations.pipelineJobs.create`` call ``job.submit`` would send."""
    from google.protobuf import json_format

    resource = type(job._gca_resource).pb(job._gca_resource)
    body = json_format.MessageToDict(resource)
    if service_account:
        body["serviceAccount"] = service_account
    return {"parent": f"projects/{job.project}/locations/{job.location}", "pipelineJob": body}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="recsys pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="write the pipeline's IR YAML (KFP v2 / Vertex AI Pipelines)")
    c.add_argument("--out", default="pipeline.yaml")
    c.add_argument("--retrain", action="store_true", help="the continuous-training pipeline (recsys-retrain)")
    for name, helptext in (("run-local", "run every step locally (kfp.local SubprocessRunner, no containers)"),
                           ("submit", "submit to Vertex AI Pipelines (or print the request with --dry-run)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
        s.add_argument("--config", default="", help="YAML/JSON config file (applied before the overrides)")
        s.add_argument("--serving-model-base-path", default="", help="what TF Serving loads")
        s.add_argument("--retrain", action="store_true",
                       help="the continuous-training pipeline: needs --raw-uri, --previous-model-uri, --logs, --events")
        s.add_argument("--raw-uri", default="", help="(--retrain) the newest raw data to add the feedback to")
        s.add_argument("--previous-model-uri", default="", help="(--retrain) the served model to warm-start from")
        s.add_argument("--logs", action="append", default=[], help="(--retrain) request log prefix or file, repeatable")
        s.add_argument("--events", action="append", default=[], help="(--retrain) events JSONL file (repeatable)")
        s.add_argument("--cold-start", action="store_true", help="(--retrain) train from scratch, no warm start")
        s.add_argument("--no-ranker", action="store_true", help="(--retrain) skip the ranker")
        s.add_argument("--tune-trials", type=int, default=0, metavar="N",
                       help="run the Tuner (TFX's) with N trials before training; every later task uses its best "
                            "settings (tune.* for the space and metric; default 0: no tuning; not with --retrain, "
                            "which warm-starts the served model's own settings)")
    r = sub.choices["run-local"]
    r.add_argument("--workdir", required=True, help="artifacts, models and kfp's local pipeline root go here")
    r.add_argument("-v", "--verbose", action="store_true", help="show every task's full output, not only progress")
    r.add_argument("--full-size", action="store_true",
                   help="the config's own sizes (default: tiny data, " + " ".join(TINY_OVERRIDES) + ")")
    s = sub.choices["submit"]
    for flag in ("--project", "--region", "--pipeline-root", "--image"):
        s.add_argument(flag, required=True)
    s.add_argument("--service-account", default="")
    s.add_argument("--artifact-root", default="", help="content-addressed stage artifacts (gs://...), optional")
    s.add_argument("--dry-run", action="store_true", help="print the request instead of sending it")
    args = p.parse_args(argv)
    if args.command == "compile":
        print(compile_retrain_pipeline(args.out) if args.retrain else compile_pipeline(args.out))
        return 0
    if args.tune_trials < 0 or (args.tune_trials and args.retrain):
        p.error("--tune-trials takes N >= 0, and not with --retrain (a warm start keeps the served model's settings)")
    retrain = _retrain_params(args, p) if args.retrain else None
    if args.command == "run-local":
        overrides = ([] if args.full_size else list(TINY_OVERRIDES)) + list(args.set)
        try:
            info = run_local(args.workdir, overrides, args.serving_model_base_path, args.config,
                             verbose=args.verbose, retrain=retrain, tune_trials=args.tune_trials)
        except RuntimeError as e:
            print(f"pipeline failed: {' '.join(str(e).split())[:500]} (full log: "
                  f"{os.path.join(os.path.abspath(args.workdir), 'run-local.log')})", file=sys.stderr)
            return 1
        print(f"pipeline finished in {info['wall_seconds']}s; artifacts under {info['artifact_root']}, "
              f"models under {info['serving_model_base_path']}, full log {info['log']}")
        return 0
    import tempfile

    cfg = resolve_config(args.config, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        template = (compile_retrain_pipeline if retrain else compile_pipeline)(os.path.join(tmp, "pipeline.yaml"))
        credentials = None
        if args.dry_run:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        try:
            job = vertex_job(template, args.project, args.region, args.pipeline_root, args.image, config_json(cfg),
                             args.serving_model_base_path or f"{args.pipeline_root.rstrip('/')}/models",
                             args.artifact_root, credentials=credentials,
                             extra_params=retrain or {"tune_trials": args.tune_trials},
                             display_name=RETRAIN_PIPELINE_NAME if retrain else PIPELINE_NAME)
        except ValueError as e:   # the Vertex SDK's own checks (region, ...): its first sentence, no traceback
            p.error(str(e).split(", select from")[0].split("\n")[0])
        if args.dry_run:
            print(json.dumps(vertex_request(job, args.service_account), indent=1, sort_keys=True))
            return 0
        job.submit(service_account=args.service_account or None)
    print(f"submitted: {job.resource_name}")
    return 0


def _retrain_params(args, parser) -> Dict:
    """The retrain pipeline's own parameters from the command line (a one-line error when one is missing)."""
    missing = [flag for flag, value in (("--raw-uri", args.raw_uri), ("--previous-model-uri", args.previous_model_uri),
                                        ("--logs", args.logs), ("--events", args.events)) if not value]
    if missing:
        parser.error(f"--retrain needs {', '.join(missing)}")
    return {"raw_uri": args.raw_uri, "previous_model_uri": args.previous_model_uri, "request_logs": list(args.logs),
            "events": list(args.events), "warm_start": not args.cold_start, "with_ranker": not args.no_ranker}


if __name__ == "__main__":
    sys.exit(main())
