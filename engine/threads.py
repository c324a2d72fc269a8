"""How many torch threads a heavy job may use: the cores shared out among the heavy jobs running at once.

Every heavy job (generator training, set making, classifier runs, feature extraction) runs inside
:func:`heavy_job`, which counts it and sets its thread's torch thread count to
``max(1, total_threads() // running)``; when the count of running jobs changes, each job takes its new
share at its next :func:`apply` (the job runner calls it whenever a job reports or asks whether to stop).
``total_threads()`` is the cores this process may run on less one, left to the server, the browser and
the rest of the machine (at least one thread), or the ``SYNTHLAB_THREADS`` setting. Why one less: OpenMP
threads wait for each other by spinning, so a core taken away from a job stalls all of its threads. On 2
cores shared with other programs (2026-11-30), the whole default loop (``bench/default_loop.py``) took
119 s with 1 thread per job and 275 s with 2 (load average about 2), 255 s and 486 s (about 6); the
conditional GAN trained 12-15 steps/s with 1 thread and 2.6-2.9 with 2 (about 6); even one digits
training alone ran faster on 1 thread (``bench/threads.py``: 14,958 against 13,598 images/s).

Why per thread: on this torch build (2.14.1, OpenMP backend) ``torch.set_num_threads`` sets the calling
thread's own OpenMP count and a process-wide starting value. A thread takes the starting value the first
time it runs torch work or asks ``torch.get_num_threads()``, and keeps its own count from then on. Measured
with two Python threads setting 1 and 3: each read back its own count when it had asked for its count
before setting it, but both read 3 when they only set it (the first later read re-initialised the thread
from the starting value the other had just set). So :func:`apply` reads before it sets, in the job's own
thread, and no job can change another's count. Oversubscribing is what this prevents: on 2 cores, two
8x8-digit trainings reached 1,903 images/s in total with torch's default of 2 threads each and 3,604 with
1 thread each (``bench/threads.py`` measured 12,080 and 18,674 with its own count of images and epochs).
Where this stops: no scheduling (``jobs.py`` decides what runs), no torch interop threads, no other
processes' threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV = "SYNTHLAB_THREADS"


class ThreadSettingError(ValueError):
    """The thread setting is not accepted; the message names it, its value and what would be."""


def cores() -> int:
    """CPU cores this process may run on (its affinity where the system has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def total_threads() -> int:
    """Torch threads all heavy jobs of this process may use together: ``SYNTHLAB_THREADS``, else one less than
    :func:`cores` (at least one)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return max(1, cores() - 1)
    if not value.isdigit() or int(value) < 1:
        raise ThreadSettingError(f"{ENV}={value!r} is not accepted: expected a whole number of threads, 1 or more")
    return int(value)


_lock = threading.Lock()
_running = 0
_generation = 0  # bumped whenever _running changes: a job's thread re-applies its share when it sees a new one
_local = threading.local()


def running() -> int:
    """Heavy jobs of this process running now."""
    with _lock:
        return _running


def per_job(jobs: int | None = None) -> int:
    """Threads for each of ``jobs`` heavy jobs (default: those running now, at least one): never below 1."""
    count = running() if jobs is None else jobs
    return max(1, total_threads() // max(1, count))


def apply() -> int:
    """Give the calling thread its share, if the count of running jobs changed since it last did; returns it."""
    with _lock:
        generation, jobs = _generation, _running
    if getattr(_local, "generation", None) != generation:
        torch.get_num_threads()  # initialises this thread's count first, so that a later read cannot reset it
        torch.set_num_threads(per_job(jobs))
        _local.generation = generation
    return torch.get_num_threads()


def _change(by: int) -> None:
    global _running, _generation
    with _lock:
        _running += by
        _generation += 1


@contextmanager
def heavy_job() -> Iterator[int]:
    """Count the calling thread's work as a heavy job while the block runs; yields its thread count.

    The thread's previous torch thread count is restored afterwards, so a caller's own setting survives.
    """
    total_threads()  # a bad setting fails here, before the job is counted
    before = torch.get_num_threads()
    _change(+1)
    try:
        yield apply()
    finally:
        _change(-1)
        _local.generation = None
        torch.set_num_threads(before)
