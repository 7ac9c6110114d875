"""serving.launch: waiting for a server process's start-up line and stopping it (no server needed)."""
import subprocess
import sys
import time

from serving.launch import announced, free_port, stop_process


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


def test_a_chatty_child_that_never_announces_gives_none_after_the_timeout():
    chatty = _child("import time\nwhile True:\n    print('still loading'); time.sleep(0.05)")
    t0 = time.monotonic()
    assert announced(chatty, "gRPC", 1.0) is None
    assert time.monotonic() - t0 < 10
    stop_process(chatty, 5)
    assert chatty.returncode is not None


def test_stop_process_terminates_then_kills_a_child_that_ignores_sigterm():
    polite = _child("import time; time.sleep(60)")
    stop_process(polite, 10)
    assert polite.returncode == -15                      # SIGTERM was enough
    stubborn = _child("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('ready', flush=True); time.sleep(60)")
    assert announced(stubborn, "ready", 30)
    t0 = time.monotonic()
    stop_process(stubborn, 0.5)
    assert stubborn.returncode == -9 and time.monotonic() - t0 < 10
    stop_process(stubborn, 0.5)                          # already gone: nothing to do
