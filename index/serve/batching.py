"""Micro-batching: worker threads run the models over the queries that queued up together.

Why batches: a forward pass over 8 images costs less than 8 passes over one (the weights are read
once, the matrix products are larger: measured, the embedding 35 -> 20 ms a query), so when
clients wait at the same time, answering them together raises throughput instead of lengthening
a queue. Why few workers, each with its own batch: the generator's convolutions are already
large at batch 1 and batch little, while splitting one small operation over several OpenMP
threads makes every thread wait for the slowest at each operation (on a loaded 2-core machine a
query went from 129 ms with 1 thread to seconds with 2). So the models run with few threads each
(`device.set_torch_threads`), and `workers` threads (default: one per core those threads leave)
each take the next batch; torch releases the GIL inside its operations, so under load two batches
run on two cores at once, and a lone client still gets one worker's full speed. The models are
shared read-only (eval mode, no gradients).

A worker blocks until a job arrives, then also takes every job already queued, and waits up to
`wait_s` (a few ms) for more while the load is concurrent: requests still being received or
decoded (`arriving`), or a previous batch of more than one. A lone client therefore never waits,
and a busy server fills its batches. `run(jobs)` returns one outcome per job; when a batch raises,
each job is run alone, so one bad job fails only its own request.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from amgan_search.errors import UserError

_STOP = object()


class MicroBatcher:
    """Runs `run(jobs) -> outcomes` on one worker thread over batches of submitted jobs."""

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[Any]], wait_s: float = 0.005,
                 max_batch: int = 16, workers: int = 1, name: str = "amgan-search-batcher"):
        self.run, self.wait_s, self.max_batch = run, float(wait_s), max(1, int(max_batch))
        self.workers = max(1, int(workers))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._arriving = 0
        self._lock = threading.Lock()
        self._last_size = 0
        self.batches = 0  # batches run and jobs in them, for /api/health and the load test
        self.jobs = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    @contextmanager
    def arriving(self):
        """Mark a request on its way to `submit` (being received, decoded, checked)."""
        with self._lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self._arriving -= 1

    def submit(self, job: Any) -> Future:
        """Queue one job; the Future gets its outcome (or its exception)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put((job, future))
        return future

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued jobs, then stop the worker."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:  # one stop for each worker
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------------

    def _concurrent(self) -> bool:
        return self._arriving > 0 or self._last_size > 1

    def _take(self) -> list | None:
        """The next batch: the first job, everything queued, and what comes within the wait."""
        first = self._queue.get()
        if first is _STOP:
            return None
        batch, deadline = [first], time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._concurrent():
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:  # finish this batch, then stop
                self._queue.put(_STOP)
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [(job, fut) for job, fut in batch if fut.set_running_or_notify_cancel()]
            self._last_size = len(live)
            if not live:
                continue
            outcomes = self._outcomes([job for job, _ in live])
            with self._lock:
                self.batches += 1
                self.jobs += len(live)
            for (_, fut), outcome in zip(live, outcomes):
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)

    def _outcomes(self, jobs: list) -> list:
        """run(jobs); when that raises, each job alone, so only the bad one gets the exception."""
        try:
            outcomes = list(self.run(jobs))
            if len(outcomes) != len(jobs):
                raise RuntimeError(f"run returned {len(outcomes)} outcomes for {len(jobs)} jobs")
            return outcomes
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any job
            if len(jobs) == 1:
                _log_unexpected(exc)
                return [exc]
        out = []
        for job in jobs:
            try:
                out.append(self.run([job])[0])
            except Exception as exc:  # noqa: BLE001
                _log_unexpected(exc)
                out.append(exc)
        return out


def _log_unexpected(exc: BaseException) -> None:
    """Errors the client caused are answered as such; anything else also goes to the server's log."""

    if not isinstance(exc, UserError):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
