"""trainer/distribute.py: cluster descriptions from Kubernetes, and two real workers training together.

The two-worker test runs two processes on loopback ports with TF_CONFIG (what a TFJob, or the
Indexed Job's derived config, gives each pod), training the two-tower with
MultiWorkerMirroredStrategy on the session's preprocessed synthetic run, while this process trains
the same model alone with the same settings; both are then evaluated the same way. Bounded: free
ports picked here, every subprocess under a timeout.
"""
import copy
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from trainer import distribute

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Same settings for one worker and for two: global batch 512, a fixed number of steps (2 x 40 batches =
# ~0.9 epochs of the ~45K train events), so the comparison is like for like.
OVERRIDES = ["train.batch_size=512", "train.epochs=2", "train.steps_per_epoch=40", "train.early_stopping_patience=5"]
WORKER_TIMEOUT_S = 600  # seconds per worker process (idle 2 cores: ~1 min); the ports are freed on kill


# ---------------------------------------------------------------- cluster descriptions
def test_tf_config_from_a_tfjob_is_used_as_is():
    tf_config = {"cluster": {"worker": ["recsys-train-worker-0.recsys.svc:2222", "recsys-train-worker-1.recsys.svc:2222"]},
                 "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    assert distribute.tf_config_from_env({"TF_CONFIG": json.dumps(tf_config)}) == tf_config


def test_indexed_job_environment_gives_each_index_its_tf_config():
    env = {distribute.ENV_WORKERS: "3", distribute.ENV_ADDRESS: "recsys-train-{index}.recsys-train-workers:2222"}
    hosts = [f"recsys-train-{i}.recsys-train-workers:2222" for i in range(3)]
    for i in range(3):
        cfg = distribute.tf_config_from_env(dict(env, JOB_COMPLETION_INDEX=str(i)))
        assert cfg == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
    assert distribute.tf_config_from_env({}) is None  # a single process


@pytest.mark.parametrize("env, message", [
    ({"TF_CONFIG": "{not json"}, "not JSON"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}})},
     "not in the cluster"),
    ({distribute.ENV_WORKERS: "2", distribute.ENV_ADDRESS: "w-{index}:2222"}, "JOB_COMPLETION_INDEX"),
    ({distribute.ENV_WORKERS: "2", distribute.ENV_ADDRESS: "w:2222", "JOB_COMPLETION_INDEX": "0"}, "{index}"),
    ({distribute.ENV_WORKERS: "2", distribute.ENV_ADDRESS: "w-{index}:2222", "JOB_COMPLETION_INDEX": "2"},
     "not in the cluster"),
])
def test_bad_cluster_descriptions_fail_with_one_clear_line(env, message):
    with pytest.raises(distribute.ClusterConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        distribute.tf_config_from_env(env)


def test_single_process_by_default():
    class T:
        strategy = "auto"

    role = distribute.resolve(T, environ={})
    assert role.kind == "none" and role.is_chief and role.num_workers == 1
    with pytest.raises(ValueError, match="unknown train.strategy"):
        T.strategy = "horovod"
        distribute.resolve(T, environ={})


# ---------------------------------------------------------------- two workers, for real
def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _evaluate(cfg, version_dir, model, catalogue, stats, tft_output):
    from trainer import evaluate_retrieval as er

    vectors = er.item_vectors(model.candidate_tower, catalogue.transformed(tft_output.transform_features_layer()))
    return er.evaluate(version_dir, lambda b: model.query_tower(b), vectors, catalogue, stats, cfg)


def test_two_workers_train_together_to_the_quality_of_one(run_cfg, preprocessed, tmp_path):
    from recsys.config import apply_override
    from trainer import train

    assert "TF_CONFIG" not in os.environ
    cfg = copy.deepcopy(run_cfg)
    for ov in OVERRIDES:
        apply_override(cfg, *ov.split("=", 1))
    cfg.eval.max_queries = 2000
    if hasattr(cfg.eval, "baselines"):
        cfg.eval.baselines = ()  # model vs popularity is enough here
    hosts = [f"localhost:{p}" for p in _free_ports(2)]
    out = tmp_path / "two_workers"
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, "-m", "trainer.distribute", preprocessed, str(out)]
        cmd += [a for ov in OVERRIDES + [f"workdir={cfg.workdir}"] for a in ("--set", ov)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        # meanwhile, the same model and settings in one process (this one)
        t0 = time.time()
        alone = train.train_retrieval(preprocessed, cfg, out_dir=str(tmp_path / "one_worker"))
        alone_s = time.time() - t0
        reports = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=WORKER_TIMEOUT_S)
            assert p.returncode == 0, f"worker failed ({p.returncode}):\n{stderr[-4000:]}"
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert alone.model.train_function.experimental_get_tracing_count() == 1  # towers + slots built before fit
    assert [r["task"]["index"] for r in reports] == [0, 1] and all(r["num_workers"] == 2 for r in reports)
    assert reports[0]["out_dir"] == str(out) and reports[1]["out_dir"] != str(out)  # only the chief writes the run
    assert not os.path.exists(reports[1]["out_dir"])  # the other worker's scratch went with its process
    assert sorted(os.listdir(out)) >= ["checkpoints", "config.json", "feature_sizes.json", "history.json"]
    history = json.load(open(out / "history.json"))
    assert len(history["loss"]) == len(alone.history["loss"]) == 2
    assert history["loss"][-1] < history["loss"][0]

    # the chief's checkpoint, loaded into a plain model, evaluated exactly like the one-worker model
    model, _, catalogue, stats, tft_output = train.build_retrieval(preprocessed, cfg, with_metrics=False)
    model.load_weights(str(out / "checkpoints" / "best.weights")).expect_partial()
    two = _evaluate(cfg, preprocessed, model, catalogue, stats, tft_output)
    one = _evaluate(cfg, preprocessed, alone.model, alone.catalogue, alone.stats, alone.tft_output)
    r_two, r_one, pop = two["two_tower"], one["two_tower"], one["popularity"]
    print(f"\ntwo workers: recall@50 {r_two['recall@50']:.4f} ndcg@10 {r_two['ndcg@10']:.4f} "
          f"({reports[0]['train_seconds']:.1f}s fit); one worker: recall@50 {r_one['recall@50']:.4f} "
          f"ndcg@10 {r_one['ndcg@10']:.4f} ({alone.train_seconds:.1f}s fit, {alone_s:.1f}s with setup); "
          f"popularity recall@50 {pop['recall@50']:.4f}")
    for r in (r_one, r_two):  # both learnt something (after 2 x 40 steps: 1.36x and 1.33x popularity)
        assert r["recall@50"] >= 1.2 * pop["recall@50"], (r, pop)
    # within noise: batch composition differs (each worker's half-batch sees half the in-batch
    # negatives); measured after 2 x 40 steps: recall@50 0.1585 (two) vs 0.1630 (one), 3% apart
    assert abs(r_two["recall@50"] - r_one["recall@50"]) <= 0.2 * r_one["recall@50"], (r_two, r_one)
    assert np.isfinite(reports[0]["final_loss"])


# ---------------------------------------------------------------- parameter-server option (no cluster here)
def test_parameter_server_partitioner_splits_only_big_tables():
    import tensorflow as tf

    part = distribute.partitioner(num_ps=2, min_shard_bytes=64 << 20)
    assert part(tf.TensorShape([1_000_000, 32]), tf.float32) == [2, 1]  # 128 MB item table -> both ps tasks
    assert part(tf.TensorShape([400, 32]), tf.float32) == [1, 1]        # small tables stay whole


def test_parameter_server_roles_from_tf_config():
    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"], "ps": ["p:1", "p:2"]}

    class T:
        strategy = "auto"
        ps_min_shard_bytes = 1 << 20

    for task_type, index in (("worker", 1), ("ps", 0)):
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}
        role = distribute.resolve(T, environ=env)  # no strategy built: these tasks only serve
        assert role.kind == "parameter_server" and role.serves_only and not role.is_chief
        assert role.num_workers == 2
    with pytest.raises(distribute.ClusterConfigError, match="needs TF_CONFIG"):
        T.strategy = "parameter_server"
        distribute.resolve(T, environ={})
