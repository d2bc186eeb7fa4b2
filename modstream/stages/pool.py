"""The process pool that hashes media and scores text off the event loop.

Its processes import the hashing stack when they start, so the first event does not pay for
it, and they die with the worker: a worker that is killed (or whose shutdown is cut short)
must not leave hashing processes behind, each holding ~200 MB. Each process has an
address-space limit, so one hostile upload fails with MemoryError in its own process instead
of taking the machine.

A process can still die (the kernel's out-of-memory killer, a crash in a native decoder), and
Python's pool is then broken for good. ``HashingPool`` replaces a broken pool, runs the calls
that were in flight once more, and reports a call that breaks the pool twice as a MediaError,
so the event that carried it is still decided.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import resource
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from modstream.contracts import MediaError

log = logging.getLogger("modstream.pool")
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def hashing_pool(workers: int, memory_limit_bytes: int | None = None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_process,
        initargs=(memory_limit_bytes,),
    )


def _start_process(memory_limit_bytes: int | None = None) -> None:
    if sys.platform == "linux":  # the kernel signals the child when its parent exits
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    import numpy as np

    from modstream.hashing.pdq import pdq_of_rgb
    from modstream.signals import registry

    registry()
    pdq_of_rgb(np.zeros((8, 8, 3), np.uint8))  # loads the compiled luma loop and the hasher
    import av  # noqa: F401
    import imagehash  # noqa: F401

    if memory_limit_bytes:  # after the imports: they map far more than they use
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


def process_started() -> bool:
    """A task for each pool process at start-up, so that all of them are spawned and warm."""
    return True


class HashingPool:
    """A process pool that survives the death of its processes (see the module)."""

    def __init__(self, workers: int, memory_limit_bytes: int | None = None) -> None:
        self.workers = workers
        self.memory_limit_bytes = memory_limit_bytes
        self.replacements = 0
        self._executor = hashing_pool(workers, memory_limit_bytes)
        self._healthy = False
        self._warming: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    @property
    def healthy(self) -> bool:
        """Started, and not broken since (what /ready reports)."""
        return self._healthy

    async def start(self) -> None:
        """Spawn every process and wait until each has imported the hashing stack."""
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(loop.run_in_executor(executor, process_started) for _ in range(self.workers))
            )
        except BrokenProcessPool:
            log.error("a new hashing pool broke while starting; the next check replaces it")
            return
        self._healthy = executor is self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a pool process; once more in a new pool if the pool broke."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, fn, *args)
            except BrokenProcessPool:
                self._replace(executor)
                if attempt == 2:
                    raise MediaError(
                        "hashing_crashed", "the hashing process died twice on this item"
                    ) from None
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Notice a pool whose idle process died and replace it, so that readiness says so
        before an event finds out. Call it periodically from the event loop."""
        executor = self._executor
        try:
            probe = executor.submit(process_started)
        except BrokenProcessPool:
            self._replace(executor)
            return
        except RuntimeError:  # shut down
            return
        loop = asyncio.get_running_loop()

        def on_probe(done: Future[bool]) -> None:  # on the pool's thread: hand over to the loop
            if not done.cancelled() and isinstance(done.exception(), BrokenProcessPool):
                loop.call_soon_threadsafe(self._replace, executor)

        probe.add_done_callback(on_probe)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for a broken one (once, however many calls saw it break)."""
        if broken is not self._executor:
            return
        self._healthy = False
        self.replacements += 1
        log.error("a hashing process died; replacing the pool (%d so far)", self.replacements)
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = hashing_pool(self.workers, self.memory_limit_bytes)
        self._warming = asyncio.get_running_loop().create_task(self.start())

    def shutdown(self) -> None:
        self._healthy = False
        self._executor.shutdown(wait=False, cancel_futures=True)
