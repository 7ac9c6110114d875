"""tf.distribute for the trainer, configured from the cluster Kubernetes describes to each pod.

Two ways a pod learns its place in the cluster (k8s/):
* ``TF_CONFIG`` (JSON), set by the Kubeflow Training Operator's TFJob (k8s/components/tfjob);
* a plain Indexed Job (k8s/base/job-train.yaml): Kubernetes sets ``JOB_COMPLETION_INDEX`` in every
  pod, the manifest sets ``RECSYS_TRAIN_WORKERS`` (N) and ``RECSYS_TRAIN_WORKER_ADDRESS`` (a pattern
  with ``{index}``, the pods' DNS names under a headless Service); ``TF_CONFIG`` is derived here.

Strategies (``train.strategy``):
* ``auto``: several workers -> ``MultiWorkerMirroredStrategy`` (synchronous data parallelism: every
  worker holds all variables; gradients, sparse ones included, are all-reduced); a cluster with
  ``ps`` tasks -> ``parameter_server``; otherwise one process (TensorFlow's default strategy).
* ``parameter_server``: ``ParameterServerStrategy`` for embedding tables larger than one worker's
  memory: variables live on the ``ps`` tasks, tables above ``train.ps_min_shard_bytes`` split over
  them (``MinSizePartitioner``); the ``chief`` coordinates, ``worker``/``ps`` tasks only run a
  ``tf.distribute.Server`` (:func:`serve_forever`).

The chief (task ``chief``, or worker 0 when there is none) writes the run's artifacts; the other
workers write theirs to a scratch directory, so the files the next step waits for appear once.
Everything is built before the first TensorFlow op: MultiWorkerMirroredStrategy must configure
the collective ops at program start.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional

ENV_WORKERS = "RECSYS_TRAIN_WORKERS"
ENV_ADDRESS = "RECSYS_TRAIN_WORKER_ADDRESS"
ENV_INDEX = "JOB_COMPLETION_INDEX"
STRATEGIES = ("auto", "multi_worker", "parameter_server", "none")


class ClusterConfigError(ValueError):
    """The pod's cluster description is inconsistent (bad TF_CONFIG or Indexed Job environment)."""


def tf_config_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """TF_CONFIG as a dict: the ``TF_CONFIG`` variable, else derived from an Indexed Job's environment.

    None when neither is present (a single process). Raises ClusterConfigError naming the problem.
    """
    env = os.environ if environ is None else environ
    if env.get("TF_CONFIG"):
        try:
            cfg = json.loads(env["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ClusterConfigError(f"TF_CONFIG is not JSON: {e}") from None
        _check(cfg)
        return cfg
    if env.get(ENV_WORKERS):
        if ENV_INDEX not in env:
            raise ClusterConfigError(f"{ENV_WORKERS} is set but {ENV_INDEX} is not (run as an Indexed Job)")
        pattern = env.get(ENV_ADDRESS, "")
        if "{index}" not in pattern:
            raise ClusterConfigError(f"{ENV_ADDRESS} must contain '{{index}}', got {pattern!r}")
        n, index = int(env[ENV_WORKERS]), int(env[ENV_INDEX])
        cfg = {"cluster": {"worker": [pattern.format(index=i) for i in range(n)]},
               "task": {"type": "worker", "index": index}}
        _check(cfg)
        return cfg
    return None


def _check(cfg: Dict[str, Any]) -> None:
    cluster, task = cfg.get("cluster"), cfg.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterConfigError(f"TF_CONFIG needs a non-empty 'cluster', got {cluster!r}")
    if not isinstance(task, dict) or "type" not in task:
        raise ClusterConfigError(f"TF_CONFIG needs 'task': {{'type': ..., 'index': ...}}, got {task!r}")
    hosts = cluster.get(task["type"])
    index = int(task.get("index", 0))
    if not hosts or not 0 <= index < len(hosts):
        raise ClusterConfigError(f"task {task['type']}:{index} is not in the cluster {cluster}")


@dataclasses.dataclass
class Role:
    """This process's strategy and place in the cluster."""

    strategy: Any                       # a tf.distribute.Strategy
    kind: str                           # none | multi_worker | parameter_server
    task_type: str = "worker"
    task_index: int = 0
    num_workers: int = 1                # processes that compute gradients
    is_chief: bool = True
    tf_config: Optional[Dict[str, Any]] = None

    @property
    def serves_only(self) -> bool:
        """A ParameterServerStrategy worker/ps task: hosts variables and ops, runs no Python training."""
        return self.kind == "parameter_server" and self.task_type in ("worker", "ps")

    def out_dir(self, out_dir: str) -> str:
        """Where this process writes: the run's directory on the chief, elsewhere a scratch directory that
        is removed when the process exits (as TensorFlow's multi-worker guide does with non-chief writes)."""
        if self.is_chief:
            return out_dir
        scratch = tempfile.mkdtemp(prefix=f"recsys-{self.task_type}-{self.task_index}-")
        atexit.register(shutil.rmtree, scratch, True)
        return scratch

    def fit_inputs(self, train_ds, valid_ds, n_examples: int, batch_size: int,
                   steps_per_epoch: Optional[int] = None, valid_fraction: float = 0.05,
                   valid_batch: int = 1024) -> Dict[str, Any]:
        """``model.fit`` keyword arguments for the datasets (``batch_size`` = the GLOBAL batch).

        One process: unchanged. Multi-worker: every worker reads the same shuffled stream (same
        seed) and keeps its share of each global batch (DATA sharding, so one input file is
        enough); datasets repeat with explicit step counts so all workers run the same number
        of steps (an uneven last batch would leave one waiting in the all-reduce).
        Parameter server: the coordinator dispatches steps; no validation pass.
        """
        import tensorflow as tf

        if self.kind == "none":
            return {"x": train_ds, "validation_data": valid_ds, "steps_per_epoch": steps_per_epoch}
        steps = steps_per_epoch or max(1, int(n_examples * (1 - valid_fraction)) // batch_size)
        if self.kind == "parameter_server":
            return {"x": train_ds.repeat(), "steps_per_epoch": steps}
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        valid_steps = max(1, int(n_examples * valid_fraction) // valid_batch)
        return {"x": train_ds.repeat().with_options(options), "steps_per_epoch": steps,
                "validation_data": valid_ds.repeat().with_options(options), "validation_steps": valid_steps}


def resolve(train_cfg, environ: Optional[Mapping[str, str]] = None) -> Role:
    """The Role for ``train.strategy`` and this pod's cluster description; call before any TF op."""
    import tensorflow as tf

    kind = getattr(train_cfg, "strategy", "auto")
    if kind not in STRATEGIES:
        raise ValueError(f"unknown train.strategy {kind!r}; choose one of {', '.join(STRATEGIES)}")
    tf_config = tf_config_from_env(environ)
    cluster = (tf_config or {}).get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if kind == "auto":
        kind = "parameter_server" if cluster.get("ps") else ("multi_worker" if workers > 1 else "none")
    if kind == "none" or (kind == "multi_worker" and tf_config is None):
        return Role(tf.distribute.get_strategy(), "none")
    if tf_config is None:
        raise ClusterConfigError("train.strategy=parameter_server needs TF_CONFIG with chief, worker and ps tasks")
    task_type, index = tf_config["task"]["type"], int(tf_config["task"].get("index", 0))
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    if kind == "multi_worker":
        os.environ["TF_CONFIG"] = json.dumps(tf_config)  # what TensorFlow's cluster resolver reads
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Role(strategy, kind, task_type, index, workers, is_chief, tf_config)
    if not cluster.get("ps") or not cluster.get("worker"):
        raise ClusterConfigError(f"parameter_server needs 'ps' and 'worker' tasks, cluster is {cluster}")
    if task_type in ("worker", "ps"):
        return Role(None, kind, task_type, index, len(cluster["worker"]), False, tf_config)
    os.environ["TF_CONFIG"] = json.dumps(tf_config)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner(len(cluster["ps"]), getattr(train_cfg, "ps_min_shard_bytes",
                                                                               64 << 20)))
    return Role(strategy, kind, task_type, index, len(cluster["worker"]), is_chief, tf_config)


def partitioner(num_ps: int, min_shard_bytes: int):
    """Splits a variable over at most ``num_ps`` shards, none smaller than ``min_shard_bytes``."""
    import tensorflow as tf

    return tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes=min_shard_bytes,
                                                                      max_shards=num_ps)


def serve_forever(role: Role) -> None:
    """A ParameterServerStrategy worker or ps task: run this task's server until the pod is stopped."""
    import tensorflow as tf

    os.environ["TF_CONFIG"] = json.dumps(role.tf_config)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=role.task_type, task_index=role.task_index,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    print(f"[train] {role.task_type}:{role.task_index} serving for the parameter-server coordinator", flush=True)
    server.join()


def main(argv=None) -> int:
    """``python -m trainer.distribute VERSION_DIR OUT_DIR [--set section.key=value ...]``

    Trains the two-tower on this process's share of the cluster in TF_CONFIG (or an Indexed Job's
    environment) and prints one JSON line (role, steps, seconds). ``recsys train`` does the same plus
    the evaluation; this entry is what tests and ad-hoc runs use.
    """
    import argparse
    import sys
    import time

    import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from recsys.config import load_config

    p = argparse.ArgumentParser(prog="python -m trainer.distribute", description=main.__doc__.splitlines()[0])
    p.add_argument("version_dir")
    p.add_argument("out_dir")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    a = p.parse_args(argv)
    cfg = load_config(None, a.overrides)
    from trainer import train

    t0 = time.time()
    trained = train.train_retrieval(a.version_dir, cfg, out_dir=a.out_dir)
    role = tf_config_from_env() or {}
    print(json.dumps({"task": role.get("task", {"type": "worker", "index": 0}),
                      "num_workers": len(role.get("cluster", {}).get("worker", [])) or 1,
                      "out_dir": trained.out_dir, "train_seconds": round(trained.train_seconds, 2),
                      "wall_seconds": round(time.time() - t0, 2),
                      "final_loss": trained.history.get("loss", [None])[-1]}), flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
