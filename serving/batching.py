"""Server-side request batching: concurrent requests to one signature run as one TF call.

Mirrors TF Serving's ``--enable_batching`` knobs (max_batch_size, batch_timeout_micros,
num_batch_threads, max_enqueued_batches). Requests merge only when their non-batch
shapes, dtypes and scalar inputs agree; a request larger than max_batch_size, or
outputs that are not batch-first, run on their own, so batching never changes results.
"""
from __future__ import annotations

import collections
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
        key.append((name, arr.dtype.str, arr.shape[1:]))
    if rows is None:
        return None, 0
    return tuple(key), rows


class Batcher:
    """Queues requests for one signature and runs merged batches on worker threads."""

    def __init__(self, run: Callable[[Arrays], Arrays], max_batch_size: int = 32,
                 batch_timeout_micros: int = 1000, num_batch_threads: int = 2,
                 max_enqueued_batches: int = 100, on_batch: Optional[Callable[[int], None]] = None):
        self._run = run
        self.max_batch_size = max(1, int(max_batch_size))
        self.timeout = max(0, int(batch_timeout_micros)) / 1e6
        self.max_enqueued_rows = max(1, int(max_enqueued_batches)) * self.max_batch_size
        self._on_batch = on_batch
        self._queue: "collections.deque[_Task]" = collections.deque()
        self._queued_rows = 0
        self._cv = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"batcher-{i}", daemon=True)
                         for i in range(max(1, int(num_batch_threads)))]
        for t in self._threads:
            t.start()

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
            self._cv.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # ---------------------------------------------------------------- workers
    def _take_batch(self) -> List[_Task]:
        with self._cv:
            while not self._queue:
                if self._closed:
                    return []
                self._cv.wait(0.5)
            first = self._queue[0]
            deadline = first.enqueued + self.timeout
            while True:
                rows = sum(t.rows for t in self._queue if t.key == first.key)
                remaining = deadline - time.perf_counter()
                if rows >= self.max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cv.wait(remaining)
            batch, kept, total = [], collections.deque(), 0
            while self._queue:
                t = self._queue.popleft()
                if t.key == first.key and total + t.rows <= self.max_batch_size:
                    batch.append(t)
                    total += t.rows
                else:
                    kept.append(t)
            self._queue = kept
            self._queued_rows -= total
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self._closed:
                    self._drain()
                    return
                continue
            self._execute(batch)

    def _drain(self) -> None:
        with self._cv:
            rest, self._queue = list(self._queue), collections.deque()
        for t in rest:
            self._execute([t])

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
