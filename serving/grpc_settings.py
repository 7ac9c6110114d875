"""gRPC core settings that only work when they are in the environment before ``import grpc``.

gRPC 1.85's EventEngine client and listener hand every read and write from a poller thread to a
worker pool and then to the thread waiting on the completion queue: two more thread wake-ups
per message on each side than the older iomgr path, where the waiting thread polls the socket
itself. On 2 loaded cores that is ~0.4 ms of a 1 ms loopback round trip (bare echo p50 1.10 ->
0.68 ms with both sides switched, 0.83 server only, 0.75 client only; see serving/README.md).
The wire protocol, TLS, Unix sockets and every API are unchanged. ``serving/__init__.py`` calls
``prefer_low_latency_polling()`` before any serving module imports grpc; it does nothing when grpc is
already imported (its core has read the variable) or when ``GRPC_EXPERIMENTS`` is set (set it,
even to an empty string, to keep gRPC's own defaults).

``quiet_core_log()`` keeps gRPC core's INFO lines (a "Got goaway" per connection whenever a server
stops) out of stderr unless ``GRPC_VERBOSITY`` says otherwise, as ``recsys`` does.
"""
from __future__ import annotations

import os
import sys

LOW_LATENCY_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def prefer_low_latency_polling() -> bool:
    """Sets GRPC_EXPERIMENTS for this process (and its children) unless too late or already chosen."""
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ:
        return False
    os.environ["GRPC_EXPERIMENTS"] = LOW_LATENCY_EXPERIMENTS
    return True


def quiet_core_log() -> None:
    """gRPC core logs errors only, unless GRPC_VERBOSITY is already set (read once, at ``import grpc``)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
