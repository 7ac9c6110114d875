"""For callers that start ``python -m serving.server`` as a process (benchmarks, ``serving.conformance``):
a free port to give it, its start-up line to wait for, and a stop. Standard library only, so the caller
need not load TensorFlow."""
from __future__ import annotations

import queue
import signal
import socket
import subprocess
import threading
import time
from typing import Optional


def free_port() -> int:
    """A loopback TCP port that is free now (for a server process given explicit ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def announced(proc: subprocess.Popen, prefix: str, timeout: float) -> Optional[str]:
    """The first line of ``proc``'s text stdout that starts with ``prefix`` (the server prints
    ``gRPC  host:port`` and ``REST  ...`` once it serves), or None when the process exits or ``timeout``
    passes first. A daemon thread reads the lines and goes on draining stdout afterwards, so a silent
    server cannot block the caller past ``timeout`` and a chatty one cannot fill its pipe."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if line is None or line.startswith(prefix):
            return line
        if time.monotonic() > deadline:  # other lines keep coming, the announcement does not
            return None


def stop_process(proc: subprocess.Popen, grace_seconds: float = 20.0) -> None:
    """SIGTERM a child (a server), then SIGKILL it if it outlives the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
