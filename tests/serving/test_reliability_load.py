"""Issue 16, bounded load test against a running ``python -m serving.server`` (what ``recsys serve`` runs).

Stated bounds: one REST predict body raises the server's peak RSS by at most MEMORY_BOUND x the
body (measured: 3-4.5x; the code before issue 16 took 41-95x), and with 200 idle + 20 slowloris
connections open every valid request is answered and the server gains no threads.
Figures for larger bodies and the code before: ``python -m benchmarks.serving_reliability``.
"""
import os
import sys

import pytest

from benchmarks import serving_reliability as rel

MEMORY_BOUND = 8.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc for the server's memory and threads")
    base = str(tmp_path_factory.mktemp("load") / "m")
    rel.write_model(base)
    srv = rel.ServerProcess(base)
    yield srv
    srv.proc.kill()  # no graceful drain needed here
    srv.proc.wait()


def test_rest_body_memory_stays_within_a_small_multiple(server):
    """The first large request on a fresh server (later ones reuse memory freed before)."""
    r = rel.memory_for(server, rel.body(12000))  # ~6 MB of ids, ints and floats
    assert r["status"] == 200
    assert r["x_body"] <= MEMORY_BOUND, r


def test_valid_requests_answered_while_200_idle_and_slow_connections_are_open(server):
    r = rel.connections(server, idle=200, slow=20, requests=10)
    assert r["answered"] == r["requests"], r
    assert r["threads_during"] - r["threads_before"] <= 4, r   # before issue 16: one thread per connection
    assert r["fds_during"] - r["fds_before"] >= 200, r           # the connections really were open
    assert os.path.exists(f"/proc/{server.proc.pid}")           # and the server is still up


def test_server_log_has_no_tensorflow_noise(server):
    """Loading logs the server's own lines; TensorFlow's deprecation notices stay out unless --log_level debug."""
    server.log.seek(0)
    text = server.log.read().decode("utf-8", "replace")
    assert "Successfully loaded servable version" in text, text[-2000:]
    for noise in ("deprecated", "WARNING:tensorflow", "Restoring parameters", "FutureWarning"):
        assert noise not in text, text[-2000:]
