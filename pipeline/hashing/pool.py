"""The process pool that hashes media off the event loop.

Its processes import the hashing stack when they start, so the first event does not pay for
it, and they die with the worker: a worker that is killed (or whose shutdown is cut short)
must not leave hashing processes behind, each holding ~200 MB.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def hashing_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_process
    )


def _start_process() -> None:
    if sys.platform == "linux":  # the kernel signals the child when its parent exits
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    import numpy as np

    from pipeline.hashing.signals import registry
    from pipeline.hashing.signals.pdq import pdq_of_rgb

    registry()
    pdq_of_rgb(np.zeros((8, 8, 3), np.uint8))  # loads the compiled luma loop and the hasher
    import imagehash  # noqa: F401


def process_started() -> bool:
    """A task for each pool process at start-up, so that all of them are spawned and warm."""
    return True
