"""Background jobs: one process-wide runner shared by every session, on threads.

Heavy jobs (training, generation) run one at a time per device lane and the rest wait in a FIFO
queue with their place known; light jobs start at once. A heavy job runs with its share of the torch
threads (:mod:`engine.threads`), taken again whenever it reports or asks whether to stop. A job's
function gets a :class:`JobContext` to report events and progress and to ask whether it should stop,
and whether the stop asks to keep what it has (*Stop and keep*) or to throw it away (*Cancel*).
Exceptions are caught and kept on the job with their message, never lost, and never reach another job;
a job that stops on cancel raises :class:`Cancelled` and is recorded as cancelled; one asked to stop and
keep that returns is recorded as stopped, with its result. Readers get immutable :class:`JobSnapshot`
copies. Where this stops: nothing here knows about training or Streamlit (what the lab submits is in
``tasks.py``); the pages poll snapshots.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import threads

log = logging.getLogger(__name__)
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "stopped", "interrupted")
FINISHED = ("done", "failed", "cancelled", "stopped", "interrupted")


class JobError(ValueError):
    """A request about a job cannot be carried out (unknown id, not the owner)."""


class Unavailable(RuntimeError):
    """Something a job needs is not on this machine (e.g. a model outside the cache while offline): an
    expected failure, logged as one line without a traceback; the message says how to get it."""


class Cancelled(Exception):
    """Work stopped because ``should_stop()`` turned true; the message says what was kept, if anything.

    Every engine function that takes ``should_stop`` raises it (GAN and diffusion-model training, the
    reference classifier, set making, Stable Diffusion): a job that raises it is recorded as cancelled.
    """


def user_message(err: BaseException) -> str:
    """What a person reads about a failure: the lab's own messages as they are, no exception class names.

    The lab's errors (ValueError, RuntimeError, OSError and Cancelled kinds) name the field, the value
    and what is accepted; anything else is a bug, whose traceback goes to the log.
    """
    text = str(err).strip()
    if isinstance(err, (ValueError, RuntimeError, OSError, Cancelled)) and text:
        return text
    return f"unexpected error: {text or 'no message'} (details are in the server log)"


def format_duration(seconds: float) -> str:
    """A rough duration as people say it: "40 s", "1 min 20 s", "12 min", "2 h 5 min"."""
    if seconds < 57.5:  # rounded to 5 s below a minute
        return f"{max(5, round(seconds / 5) * 5)} s"
    if seconds < 600:
        minutes, rest = divmod(round(seconds / 10) * 10, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_eta(seconds: float) -> str:
    """The time left as people say it: "about 1 min 20 s left"."""
    return f"about {format_duration(seconds)} left"


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state at one moment."""

    id: str
    title: str
    owner: str
    group: str  # e.g. the experiment id
    tag: str  # the caller's name for what the job works on, e.g. a run id
    lane: str
    status: str
    progress: float  # 0..1
    message: str
    queue_position: int  # 1 = next to run; 0 when not queued
    created: float
    started: float
    finished: float
    error: str
    events: tuple[Any, ...]
    result: Any = None

    @property
    def eta_seconds(self) -> float | None:
        if self.status != "running" or self.progress <= 0.01:
            return None
        elapsed = time.time() - self.started
        return elapsed * (1 - self.progress) / self.progress


class JobContext:
    """What a job function may do: report and ask whether to stop."""

    def __init__(self, job: _Job, lock: threading.Lock) -> None:
        self._job, self._lock = job, lock

    def emit(self, event: Any) -> None:
        threads.apply()
        with self._lock:
            self._job.events.append(event)

    def set_progress(self, fraction: float, message: str = "") -> None:
        threads.apply()
        with self._lock:
            self._job.progress = min(1.0, max(0.0, float(fraction)))
            if message:
                self._job.message = message

    def should_stop(self) -> bool:
        threads.apply()  # a job started or ended elsewhere: take this job's new share of the threads
        return self._job.stop.is_set()

    def keep_on_stop(self) -> bool:
        """Whether the stop asks to keep what the job has so far (*Stop and keep*) rather than throw it away."""
        return self._job.keep


@dataclass
class _Job:
    id: str
    title: str
    owner: str
    group: str
    tag: str
    lane: str
    fn: Callable[[JobContext], Any] | None  # dropped when the job ends, with whatever it holds
    events: collections.deque[Any]
    status: str = "queued"
    progress: float = 0.0
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    result: Any = None
    stop: threading.Event = field(default_factory=threading.Event)
    keep: bool = False  # the stop asks to keep what the job has (Stop and keep)
    heavy: bool = True


class JobRunner:
    """Runs jobs on worker threads: one worker per lane for heavy jobs, a thread each for light ones."""

    def __init__(self, *, max_events: int = 20_000, keep_finished_s: float = 24 * 3600) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._queues: dict[str, collections.deque[_Job]] = {}
        self._wake: dict[str, threading.Condition] = {}
        self._ids = itertools.count(1)
        self._max_events = max_events
        self._keep_finished_s = keep_finished_s

    def submit(
        self,
        title: str,
        fn: Callable[[JobContext], Any],
        *,
        owner: str,
        group: str = "",
        tag: str = "",
        lane: str = "cpu",
        heavy: bool = True,
    ) -> str:
        """Queue ``fn``; returns the job id at once."""
        job_id = f"job-{next(self._ids)}-{int(time.time() * 1000) % 100000}"
        job = _Job(job_id, title, owner, group, tag, lane, fn, collections.deque(maxlen=self._max_events), heavy=heavy)
        with self._lock:
            self._forget_old()
            self._jobs[job_id] = job
            if not heavy:
                threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True).start()
                return job_id
            if lane not in self._queues:
                self._queues[lane] = collections.deque()
                self._wake[lane] = threading.Condition(self._lock)
                threading.Thread(target=self._worker, args=(lane,), name=f"lane-{lane}", daemon=True).start()
            self._queues[lane].append(job)
            self._wake[lane].notify()
        return job_id

    def cancel(self, job_id: str, *, owner: str | None = None, keep: bool = False) -> None:
        """Cancel a queued job at once, or ask a running one to stop at its next step.

        With ``keep``, a running job is asked to keep what it has (a job that cannot keep anything stops
        as cancelled); a queued job has nothing to keep and is cancelled either way.
        """
        with self._lock:
            job = self._get(job_id, owner)
            job.keep = (job.keep and keep) if job.stop.is_set() else keep  # a cancel wins, in either order
            job.stop.set()
            if job.status == "queued":  # still in its queue: the worker pops and starts under this lock
                queue = self._queues.get(job.lane)
                if queue is not None and job in queue:
                    queue.remove(job)
                job.status, job.finished, job.fn = "cancelled", time.time(), None

    def snapshot(self, job_id: str) -> JobSnapshot:
        with self._lock:
            return self._snap(self._get(job_id, None))

    def list(self, *, owner: str | None = None, group: str | None = None) -> list[JobSnapshot]:
        """Jobs, oldest first, optionally of one owner or group."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if owner in (None, j.owner) and group in (None, j.group)]
            return [self._snap(j) for j in jobs]

    def wait(self, job_id: str, timeout: float = 60.0) -> JobSnapshot:
        """Block until the job has finished (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while (snap := self.snapshot(job_id)).status not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {snap.status} after {timeout} s")
            time.sleep(0.02)
        return snap

    def _get(self, job_id: str, owner: str | None) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"job_id={job_id!r} is not a job of this server")
        if owner is not None and job.owner != owner:
            raise JobError(f"job {job_id!r} belongs to another session")
        return job

    def _snap(self, job: _Job) -> JobSnapshot:
        queue = self._queues.get(job.lane, collections.deque())
        position = next((i + 1 for i, j in enumerate(queue) if j is job), 0)
        return JobSnapshot(
            job.id,
            job.title,
            job.owner,
            job.group,
            job.tag,
            job.lane,
            job.status,
            job.progress,
            job.message,
            position,
            job.created,
            job.started,
            job.finished,
            job.error,
            tuple(job.events),
            job.result,
        )

    def _worker(self, lane: str) -> None:
        while True:
            with self._lock:
                while not self._queues[lane]:
                    self._wake[lane].wait()
                job = self._queues[lane].popleft()
                job.status, job.started = "running", time.time()  # under the lock: a cancel now stops it
            self._run(job)

    def _forget_old(self) -> None:
        """Drop finished jobs older than ``keep_finished_s`` (their runs stay on disk)."""
        cutoff = time.time() - self._keep_finished_s
        for job_id in [j.id for j in self._jobs.values() if j.status in FINISHED and j.finished < cutoff]:
            del self._jobs[job_id]

    def _run(self, job: _Job) -> None:
        with self._lock:
            if job.status == "queued":  # light jobs start here; heavy ones were started by their worker
                job.status, job.started = "running", time.time()
            fn = job.fn
            if job.status != "running" or fn is None:
                return
        try:
            with threads.heavy_job() if job.heavy else contextlib.nullcontext():
                result = fn(JobContext(job, self._lock))
            stopped_as = "stopped" if job.keep else "cancelled"
            status, error = (stopped_as if job.stop.is_set() else "done"), ""
        except Exception as err:  # kept on the job; the worker lives on for the next one
            stopped = job.stop.is_set() or isinstance(err, Cancelled)
            if isinstance(err, Unavailable):
                log.warning("job %s (%s) failed: %s", job.id, job.title, err)
            elif not stopped:
                log.error("job %s (%s) failed:\n%s", job.id, job.title, traceback.format_exc())
            # a job that stops on cancel by raising was cancelled, not failed; its message is kept
            result, status = None, ("cancelled" if stopped else "failed")
            error = user_message(err)
        with self._lock:
            job.result, job.status, job.error, job.finished = result, status, error, time.time()
            job.fn = None  # the closure may hold a whole dataset
            if status == "done":
                job.progress = 1.0
