"""recsys/loop.py's serving side on a toy model: a round's requests come back from the server's own
request log (TF Serving's logging_config), a hot swap under a live probe loses no request, and the A/B
round serves two versions side by side under labels, each user from the arm their id hashes to."""
import os
import shutil

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest

from contracts import prediction_log
from recsys import loop
from serving.client import ServingClient
from serving.testing import start_server, write_toy_model


def _install(src: str, base: str, version: int) -> None:
    tmp = os.path.join(base, f".tmp-{version}")
    shutil.copytree(os.path.join(src, str(version)), tmp)
    os.rename(tmp, os.path.join(base, str(version)))  # as exports publish: complete before it is visible


def test_round_is_read_back_from_the_request_log_and_the_swap_loses_no_request(tmp_path):
    src, base, logs = str(tmp_path / "src"), str(tmp_path / "models"), str(tmp_path / "logs")
    for v in (1, 2):
        write_toy_model(src, v, k=5, warmup=False)
    os.makedirs(os.path.join(base, "toy"))
    _install(src, os.path.join(base, "toy"), 1)
    os.makedirs(logs)
    config = tmp_path / "models.config"
    config.write_text(loop.model_config(base, ["toy"], logs))
    srv = start_server(model_config_file=str(config), rest=False, poll_seconds=0.2,
                       model_config_file_poll_wait_seconds=0.2)
    try:
        with ServingClient(srv.grpc_address) as client:
            at = 1_700_000_000
            reqs = {f"u{i}": {"user_id": np.array([f"u{i}"], object), "timestamp": np.array([at], np.int64)}
                    for i in range(12)}
            served, version = loop.serve_round(client, "toy", reqs, os.path.join(logs, "toy"), at,
                                      str(tmp_path / "round1.tfrecord"), k=3)
            assert version == 1 and sorted(s["user_id"] for s in served) == sorted(reqs)
            assert all(s["item_ids"] == [f"{s['user_id']}-{r}" for r in range(3)] and s["timestamp"] == at
                       for s in served)
            assert len({s["request_id"] for s in served}) == 12  # the server's own request ids
            shipped = list(prediction_log.read_served_lists(str(tmp_path / "round1.tfrecord")))
            assert {(s.request_id, s.version) for s in shipped} == {(s["request_id"], 1) for s in served}

            probe = loop.Probe(srv.grpc_address, "toy", reqs["u0"])
            probe.start()
            try:
                _install(src, os.path.join(base, "toy"), 2)
                assert loop.wait_for_version(client, "toy", 2, timeout=60)
                deadline = 0
                while probe.versions[-1:] != [2] and deadline < 200:
                    deadline += 1
                    probe._halt.wait(0.05)
            finally:
                probe.stop()
            assert probe.failed == 0 and probe.ok > 0, probe.errors[:3]
            assert probe.versions == [1, 2]

            # A/B: version 1 comes back beside 2 (specific policy), then the labels are added
            labels = {"stable": 1, "canary": 2}
            loop.label_versions(str(config), client, base, "toy", logs, labels, reqs["u0"], timeout=60)
            assert 'version_labels { key: "canary" value: 2 }' in config.read_text()
            day2 = {u: {**r, "timestamp": np.array([at + 86400], np.int64)} for u, r in reqs.items()}
            served, version = loop.serve_round(client, "toy", day2, os.path.join(logs, "toy"), at + 86400,
                                               str(tmp_path / "round2.tfrecord"), k=3, labels=labels)
            arms = {u: loop.arm_of(u) for u in reqs}
            assert set(arms.values()) == {"stable", "canary"} and version == 2
            assert sorted(s["user_id"] for s in served) == sorted(reqs)
            assert all(s["version"] == labels[arms[s["user_id"]]] for s in served)
            for v in (1, 2):  # one log per arm, each holding exactly that arm's users
                got = {s.user_id for s in prediction_log.read_served_lists(str(tmp_path / f"round2-v{v}.tfrecord"))}
                assert got == {u for u, a in arms.items() if labels[a] == v}
    finally:
        srv.stop(0)


def _write_explore_toy(base: str, epsilon: float = 0.5) -> None:
    """A toy recommend model: six items with fixed scores; serving_default shows the best 3, `explore` runs the
    recommend export's own in-graph epsilon-greedy (over the best 4) keyed by user id and timestamp."""
    import tensorflow as tf

    from trainer.export_recommend import epsilon_greedy_top_k

    ids = tf.constant([f"i{j}" for j in range(6)])
    logit = tf.constant([2.0, 1.5, 1.0, 0.5, 0.0, -0.5])
    spec = dict(user_id=tf.TensorSpec([None], tf.string), timestamp=tf.TensorSpec([None], tf.int64))

    def scored(user_id):
        return tf.broadcast_to(logit, [tf.shape(user_id)[0], 6])

    @tf.function(input_signature=[spec["user_id"], spec["timestamp"]])
    def greedy(user_id, timestamp):
        top = tf.math.top_k(scored(user_id), k=3)
        return {"item_ids": tf.gather(ids, top.indices), "scores": tf.sigmoid(top.values)}

    @tf.function(input_signature=[spec["user_id"], spec["timestamp"]])
    def explore(user_id, timestamp):
        keys = tf.strings.join([user_id, tf.strings.as_string(timestamp), "seed0"], separator="|")
        s = epsilon_greedy_top_k(scored(user_id), tf.fill([tf.shape(user_id)[0]], 3), 4, epsilon, keys)
        return {"item_ids": tf.gather(ids, s["order"]), "scores": tf.sigmoid(tf.gather(logit, s["order"])),
                "propensities": s["propensities"], "greedy_item_ids": tf.gather(ids, s["greedy"]),
                "explored": s["explored"], "epsilon": tf.fill([tf.shape(user_id)[0]], epsilon)}

    tf.saved_model.save(tf.Module(), os.path.join(base, "toy", "1"),
                        signatures={"serving_default": greedy, "explore": explore})


def test_explore_half_logs_propensities_through_the_server_and_the_join_keeps_them(tmp_path):
    """The explore half of the users calls the `explore` signature; the server's PredictionLog records keep the
    propensities (its logging_config), the round's slice carries them, and the feedback join keeps them."""
    from preprocessing import feedback

    base, logs = str(tmp_path / "models"), str(tmp_path / "logs")
    _write_explore_toy(base)
    os.makedirs(logs)
    config = tmp_path / "models.config"
    config.write_text(loop.model_config(base, ["toy"], logs))
    srv = start_server(model_config_file=str(config), rest=False, poll_seconds=0.2)
    at = 1_700_000_000
    reqs = {f"u{i}": {"user_id": np.array([f"u{i}"], object), "timestamp": np.array([at], np.int64)}
            for i in range(16)}
    try:
        with ServingClient(srv.grpc_address) as client:
            served, _ = loop.serve_round(client, "toy", reqs, os.path.join(logs, "toy"), at,
                                         str(tmp_path / "round1.tfrecord"), k=3, explore=True)
    finally:
        srv.stop(0)
    halves = {s["user_id"]: s for s in served}
    assert {loop.policy_of(u) for u in reqs} == {"greedy", "explore"}
    logged = {r.request_id: r for r in prediction_log.read_requests(os.path.join(logs, "toy"))}
    greedy_list = ["i0", "i1", "i2"]
    for user, s in halves.items():
        record = logged[s["request_id"]]
        if loop.policy_of(user) == "greedy":
            assert record.signature_name == "serving_default" and "propensities" not in record.outputs
            assert s["item_ids"] == greedy_list
            continue
        assert record.signature_name == "explore"  # the server's own log: the whole exploring response
        props = record.outputs["propensities"][0]
        want = [0.5 * (item == g) + 0.5 / 4 for item, g in zip(s["item_ids"], greedy_list)]
        np.testing.assert_allclose(props, want, rtol=1e-6)
        assert [x.decode() for x in record.outputs["greedy_item_ids"][0]] == greedy_list
        assert set(s["item_ids"]) <= {"i0", "i1", "i2", "i3"}
    assert any(s["item_ids"] != greedy_list for s in served)  # someone explored (16 users at epsilon 0.5)

    events = [{"request_id": s["request_id"], "user_id": s["user_id"], "item_id": s["item_ids"][0],
               "event": "click", "value": 1.0, "timestamp": at + 5} for s in served]
    joined = feedback.join_logs(str(tmp_path / "round1.tfrecord"), events)  # the round's slice, as retrain reads it
    assert joined.counts["events_joined"] == len(served)
    for ex in joined.examples:
        s = halves[ex["user_id"]]
        if loop.policy_of(ex["user_id"]) == "greedy":
            assert ex["policy_propensity"] is None
        else:
            p = ex["position"]
            assert ex["policy_propensity"] == pytest.approx(0.5 * (s["item_ids"][p - 1] == greedy_list[p - 1]) + 0.125)
            assert ex["greedy_item_id"] == greedy_list[p - 1]
