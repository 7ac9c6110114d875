"""serving.launch: waiting for a server process's start-up line (no server needed)."""
import subprocess
import sys
import time

from serving.launch import announced, free_port


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, text=True)


def test_the_announced_line_is_returned_and_other_lines_skipped():
    proc = _child("print('loading'); print('gRPC  127.0.0.1:1234'); print('REST  127.0.0.1:5678')")
    assert announced(proc, "gRPC", 30) == "gRPC  127.0.0.1:1234\n"
    proc.wait(30)


def test_an_exit_or_a_silent_child_gives_none_within_the_timeout():
    assert announced(_child("print('crashed')"), "gRPC", 30) is None
    silent = _child("import time; time.sleep(60)")
    t0 = time.monotonic()
    assert announced(silent, "gRPC", 1.0) is None
    assert time.monotonic() - t0 < 10
    silent.kill()
    silent.wait()


def test_free_port_is_a_bindable_loopback_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
