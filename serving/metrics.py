"""Prometheus metrics, named after TF Serving's (``:tensorflow:serving:...``) so dashboards carry over.

Each server owns its registry (tests run several servers in one process). Exposed on
the REST port at ``/monitoring/prometheus/metrics`` as TF Serving does, and optionally
on a separate ``--monitoring_port``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no *_created series: TF Serving doesn't export them either

PREFIX = ":tensorflow:serving:"
MAX_CACHED_LABEL_SETS = 4096
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Request counts, latency histogram, errors by code, model loads and warmup counts."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict = {}  # (model, api, entrypoint, code) -> metric children (request path cache)
        r = self.registry
        self.requests = Counter(PREFIX + "request_count", "Requests by model, API, entrypoint and status.",
                                ["model_name", "API", "entrypoint", "status"], registry=r)
        self.latency = Histogram(PREFIX + "request_latency_seconds", "End-to-end request latency in seconds.",
                                 ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter(PREFIX + "request_errors", "Failed requests by status code.",
                              ["model_name", "API", "entrypoint", "code"], registry=r)
        self.loads = Counter(PREFIX + "model_load_count", "Model version load attempts by outcome.",
                             ["model_name", "status"], registry=r)
        self.load_seconds = Histogram(PREFIX + "model_load_latency_seconds", "Model version load + warmup time.",
                                      ["model_name"], buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        self.warmup = Counter(PREFIX + "model_warmup_requests", "Warmup requests replayed at load.",
                              ["model_name", "model_version"], registry=r)
        self.available = Gauge(PREFIX + "model_versions_available", "Versions currently serving.",
                               ["model_name"], registry=r)
        self.batch_size = Histogram(PREFIX + "batch_size", "Rows per executed batch (batching on).",
                                    ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        # Not in TF Serving: how the REST front end and the model directories are doing (see README).
        self.rest_connections = Gauge(PREFIX + "rest_open_connections", "Open REST connections.", registry=r)
        self.rest_rejected = Counter(PREFIX + "rest_rejected_connections",
                                     "REST connections closed at accept: --rest_api_max_connections reached.",
                                     registry=r)
        self.rest_timeouts = Counter(PREFIX + "rest_request_timeouts",
                                     "REST requests whose body did not arrive within --rest_api_timeout_in_ms.",
                                     registry=r)
        self.base_path_ok = Gauge(PREFIX + "model_base_path_readable",
                                  "1 when the model's base path could be listed at the last poll, else 0.",
                                  ["model_name"], registry=r)

    @contextmanager
    def observe(self, model: str, api: str, entrypoint: str) -> Iterator[dict]:
        """Times a request; the body sets ``outcome['code']`` (a status name) when it fails."""
        outcome = {"code": "OK"}
        t0 = time.perf_counter()
        try:
            yield outcome
        finally:
            self.record(model, api, entrypoint, outcome["code"], time.perf_counter() - t0)

    def record(self, model: str, api: str, entrypoint: str, code: str, seconds: float) -> None:
        key = (model, api, entrypoint, code)
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the updates: once per label set
            name = model or "<none>"
            children = (self.requests.labels(name, api, entrypoint, code), self.latency.labels(name, api, entrypoint),
                        self.errors.labels(name, api, entrypoint, code) if code != "OK" else None)
            if len(self._children) >= MAX_CACHED_LABEL_SETS:
                self._children.clear()
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    # callbacks used by the model manager
    def model_loaded(self, model: str, version: int, ok: bool, seconds: float, warmup_requests: int) -> None:
        self.loads.labels(model, "OK" if ok else "ERROR").inc()
        if ok:
            self.load_seconds.labels(model).observe(seconds)
            if warmup_requests:
                self.warmup.labels(model, str(version)).inc(warmup_requests)

    def versions_available(self, model: str, count: int) -> None:
        self.available.labels(model).set(count)

    def base_path_readable(self, model: str, ok: bool) -> None:
        self.base_path_ok.labels(model).set(1 if ok else 0)

    def batch(self, model: str, rows: int) -> None:
        self.batch_size.labels(model).observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: Optional[dict] = None) -> float:
        """A sample's current value (tests and the benchmark read counters through this)."""
        v = self.registry.get_sample_value(PREFIX + name, labels or {})
        return 0.0 if v is None else v
