"""serving.grpc_settings: the gRPC transport setting is chosen before grpc loads, and never over the user's."""
import os
import subprocess
import sys

from serving import grpc_settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_keeps_a_users_choice_and_does_nothing_once_grpc_is_loaded(monkeypatch):
    monkeypatch.setenv("GRPC_EXPERIMENTS", "")
    assert grpc_settings.prefer_low_latency_polling() is False
    assert os.environ["GRPC_EXPERIMENTS"] == ""
    monkeypatch.delenv("GRPC_EXPERIMENTS")
    monkeypatch.setitem(sys.modules, "grpc", sys.modules.get("grpc") or object())
    assert grpc_settings.prefer_low_latency_polling() is False
    assert "GRPC_EXPERIMENTS" not in os.environ


def test_a_fresh_process_gets_the_setting_and_grpc_still_round_trips():
    """Importing serving first sets GRPC_EXPERIMENTS before grpc's core reads it; a call still works."""
    code = (
        "import os, serving, grpc\n"
        "from concurrent import futures\n"
        "s = grpc.server(futures.ThreadPoolExecutor(2))\n"
        "s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler('t.E', {'Echo': "
        "grpc.unary_unary_rpc_method_handler(lambda r, c: r[::-1])}),))\n"
        "port = s.add_insecure_port('127.0.0.1:0'); s.start()\n"
        "with grpc.insecure_channel(f'127.0.0.1:{port}') as ch:\n"
        "    print(os.environ['GRPC_EXPERIMENTS'], ch.unary_unary('/t.E/Echo')(b'abc', timeout=10))\n"
        "s.stop(0)\n")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [grpc_settings.LOW_LATENCY_EXPERIMENTS, "b'cba'"]
