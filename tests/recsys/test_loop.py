"""recsys/loop.py's serving side on a toy model: a round's requests come back from the server's own
request log (TF Serving's logging_config), a hot swap under a live probe loses no request, and the A/B
round serves two versions side by side under labels, each user from the arm their id hashes to."""
import os
import shutil

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np

from recsys import loop
from serving import request_log
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
            shipped = list(request_log.read_served_lists(str(tmp_path / "round1.tfrecord")))
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
                got = {s.user_id for s in request_log.read_served_lists(str(tmp_path / f"round2-v{v}.tfrecord"))}
                assert got == {u for u, a in arms.items() if labels[a] == v}
    finally:
        srv.stop(0)
