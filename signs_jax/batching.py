"""One thread runs every forward pass of a server: requests wait in a queue and go through in fixed-size batches.

The model is compiled for one batch shape; whatever is waiting when the thread is free (up to that size) becomes
one padded batch, so concurrent requests share forward passes and never compile another shape. Each request gets
a `concurrent.futures.Future` that receives its own row of the batch's output.
"""

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Tuple

import numpy as np

_STOP = object()


class BatchQueue:
    """`submit(item)` -> Future of `run_batch(batch)[row]`, where `batch` is (batch_size, *item_shape), the items
    waiting at the time in their order of arrival followed by zeros."""

    def __init__(
        self, run_batch: Callable, batch_size: int, item_shape: Tuple[int, ...], dtype=np.float32, name="inference"
    ):
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.item_shape = tuple(item_shape)
        self.dtype = dtype
        self.batch_sizes = []  # items per batch run, in order (how well requests were batched)
        self._queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item) -> Future:
        item = np.asarray(item, self.dtype)
        if item.shape != self.item_shape:
            raise ValueError(f"item of shape {item.shape}; this queue batches {self.item_shape}")
        future = Future()
        with self._lock:  # nothing lands behind the stop mark, where no one would answer it
            if self._closed:
                raise RuntimeError("the batch queue is closed")
            self._queue.put((item, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            waiting = [self._queue.get()]
            while len(waiting) < self.batch_size:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(entry is _STOP for entry in waiting)
            # A request whose client went away has its future cancelled: it takes no row.
            taken = [
                (item, f) for item, f in (e for e in waiting if e is not _STOP) if f.set_running_or_notify_cancel()
            ]
            if taken:
                self._run(taken)

    def _run(self, taken) -> None:
        batch = np.zeros((self.batch_size, *self.item_shape), self.dtype)
        batch[: len(taken)] = [item for item, _ in taken]
        self.batch_sizes.append(len(taken))
        try:
            out = np.asarray(self.run_batch(batch))
        except Exception as err:  # noqa: BLE001 - every waiting request hears of the failure, the thread goes on
            for _, future in taken:
                future.set_exception(err)
            return
        for row, (_, future) in enumerate(taken):
            future.set_result(out[row])
