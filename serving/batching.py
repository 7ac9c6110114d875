"""Server-side request batching: concurrent requests to one signature run as one TF call.

Mirrors TF Serving's ``--enable_batching`` knobs (max_batch_size, batch_timeout_micros,
num_batch_threads = batches running at once, max_enqueued_batches). Requests merge only when their non-batch
shapes, dtypes and scalar inputs agree; a request larger than max_batch_size, or
outputs that are not batch-first, run on their own, so batching never changes results.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from serving.errors import RESOURCE_EXHAUSTED, ServingError

Arrays = Dict[str, np.ndarray]


class _Task:
    __slots__ = ("inputs", "rows", "key", "done", "result", "error", "enqueued")

    def __init__(self, inputs: Arrays, rows: int, key):
        self.inputs, self.rows, self.key = inputs, rows, key
        self.done = threading.Event()
        self.result: Optional[Arrays] = None
        self.error: Optional[BaseException] = None
        self.enqueued = time.perf_counter()


def _dtype_key(arr: np.ndarray) -> str:
    """Strings merge whatever their numpy form (REST sends fixed-width ``S`` arrays, gRPC object arrays)."""
    return "string" if arr.dtype.kind in "OSU" else arr.dtype.str


def _batch_key(inputs: Arrays):
    """Requests with equal keys can be concatenated along axis 0; None = not batchable."""
    rows = None
    key = []
    for name in sorted(inputs):
        arr = inputs[name]
        if arr.ndim == 0:
            key.append((name, arr.dtype.str, "scalar", arr.tobytes() if arr.dtype != object else repr(arr.item())))
            continue
        if rows is None:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return None, 0
        key.append((name, _dtype_key(arr), arr.shape[1:]))
    if rows is None:
        return None, 0
    return tuple(key), rows


class Batcher:
    """Queues requests for one signature; the request at the head of the queue runs the merged batch.

    Leader/follower instead of dedicated batch threads: the head request waits up to the
    timeout for company, takes every compatible request (up to max_batch_size) and runs
    them in its own thread, so a lone request pays no thread hand-off. At most
    ``num_batch_threads`` batches run at once; while they do, the queue fills, which is
    where batches come from when the timeout is 0.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], max_batch_size: int = 32,
                 batch_timeout_micros: int = 0, num_batch_threads: int = 2,
                 max_enqueued_batches: int = 100, on_batch: Optional[Callable[[int], None]] = None):
        self._run = run
        self.max_batch_size = max(1, int(max_batch_size))
        self.timeout = max(0, int(batch_timeout_micros)) / 1e6
        self.max_running = max(1, int(num_batch_threads))
        self.max_enqueued_rows = max(1, int(max_enqueued_batches)) * self.max_batch_size
        self._on_batch = on_batch
        self._queue: List[_Task] = []
        self._queued_rows = 0
        self._running = 0
        self._cv = threading.Condition()
        self._closed = False

    def submit(self, inputs: Arrays) -> Arrays:
        key, rows = _batch_key(inputs)
        if key is None or rows > self.max_batch_size or self._closed:
            return self._run(inputs)
        task = _Task(inputs, rows, key)
        with self._cv:
            if self._queued_rows + rows > self.max_enqueued_rows:
                raise ServingError(RESOURCE_EXHAUSTED, "The batch scheduling queue to which this task was "
                                                       "submitted is full")
            self._queue.append(task)
            self._queued_rows += rows
            self._cv.notify_all()
            batch = self._lead_or_follow(task)
        if batch:
            self._execute(batch)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _rows_like(self, head: _Task) -> int:
        return sum(t.rows for t in self._queue if t.key == head.key)

    def _lead_or_follow(self, task: _Task) -> List[_Task]:
        """Under the lock: returns the batch to run when ``task`` leads, [] once another leader took it."""
        while True:
            if task.done.is_set() or task not in self._queue:
                return []
            if self._queue[0] is task and self._running < self.max_running:
                deadline = task.enqueued + self.timeout
                while self._rows_like(task) < self.max_batch_size and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch, kept, total = [], [], 0
                for t in self._queue:
                    if t.key == task.key and total + t.rows <= self.max_batch_size:
                        batch.append(t)
                        total += t.rows
                    else:
                        kept.append(t)
                self._queue = kept
                self._queued_rows -= total
                self._running += 1
                self._cv.notify_all()  # the next head may lead a batch of its own
                return batch
            self._cv.wait()

    def _execute(self, batch: List[_Task]) -> None:
        try:
            if len(batch) == 1:
                batch[0].result = self._run(batch[0].inputs)
            else:
                self._execute_merged(batch)
        except BaseException as e:  # noqa: BLE001  (delivered to every waiting request)
            for t in batch:
                if t.result is None:
                    t.error = e
        finally:
            with self._cv:
                self._running -= 1
                self._cv.notify_all()
            if self._on_batch is not None:
                self._on_batch(sum(t.rows for t in batch))
            for t in batch:
                t.done.set()

    def _execute_merged(self, batch: List[_Task]) -> None:
        first = batch[0].inputs
        merged = {k: (v if v.ndim == 0 else np.concatenate([t.inputs[k] for t in batch])) for k, v in first.items()}
        out = self._run(merged)
        total = sum(t.rows for t in batch)
        if not all(getattr(v, "ndim", 0) >= 1 and v.shape[0] == total for v in out.values()):
            for t in batch:  # outputs are not batch-first: run each request alone
                t.result = self._run(t.inputs)
            return
        start = 0
        for t in batch:
            t.result = {k: v[start:start + t.rows] for k, v in out.items()}
            start += t.rows
