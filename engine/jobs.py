"""Background jobs: one process-wide runner shared by every session, on threads or on Ray (:mod:`engine.ray_backend`).

Heavy jobs (training, generation) run one at a time per device lane on threads, and as many as the cluster has
room for on Ray; the rest wait in the lane's queue, taken round-robin across owners so that one user's twelfth
run does not hold back another's first: owners take turns in the order they started waiting, and within one
owner jobs run in the order they came. A job's ``queue_position`` is its place in that order (1 = next). Each
user may have at most ``limits_for(owner).max_jobs`` heavy jobs queued or running (:mod:`engine.limits`; not
for a runner made with ``per_user_cap=False``, as one person's CLI command is); one more is refused with
:class:`LimitReached`, and :meth:`JobRunner.room` lets a caller refuse a batch up front. Light jobs start at
once. A heavy job runs with its share of the torch threads (:mod:`engine.threads`), taken again whenever it
reports or asks whether to stop. A job's function gets a :class:`JobContext` to report events and progress and
to ask whether it should stop, and whether the stop asks to keep what it has (*Stop and keep*) or to throw it
away (*Cancel*). Only a job's owner, or an admin, may cancel it. Exceptions are caught and kept on the job
with their message, never lost, and never reach another job; a job that stops on cancel raises
:class:`Cancelled` and is recorded as cancelled; one asked to stop and keep that returns is recorded as
stopped, with its result. Readers get immutable :class:`JobSnapshot` copies; ``list(events=False)`` leaves the
events out, for pages that poll every second. ``usage()`` sums each owner's jobs for an admin, and ``every()``
runs a housekeeping function periodically. Where this stops: nothing here knows about training or Streamlit
(what the lab submits is in ``tasks.py``); the pages poll snapshots. :func:`make_runner` chooses the backend
from ``SYNTHLAB_RUNNER``: this module's threads (the default) or Ray tasks on a cluster
(:mod:`engine.ray_backend`), behind the same interface, so the pages never know which one runs."""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import limits, owners, threads

if TYPE_CHECKING:
    from engine.ray_backend import ClusterInfo

log = logging.getLogger(__name__)
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "stopped", "interrupted")
FINISHED = ("done", "failed", "cancelled", "stopped", "interrupted")
RUNNER_ENV = "SYNTHLAB_RUNNER"
BACKENDS = ("threads", "ray")


class JobError(ValueError):
    """A request about a job cannot be carried out (unknown id, not the owner)."""


class LimitReached(JobError):
    """A user already has as many heavy jobs queued or running as this server allows them."""


class Unavailable(RuntimeError):
    """Something a job needs is not on this machine (e.g. a model outside the cache while offline): an
    expected failure, logged as one line without a traceback; the message says how to get it."""


class Interrupted(RuntimeError):
    """The process running a job stopped before the job ended (a cluster worker or its node died): the job
    is recorded as interrupted, and a run can be resumed from its last checkpoint."""


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
    where: str = ""  # where it runs: "" on the server's threads, "node <ip> (<node id>)" on a cluster

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


@dataclass(frozen=True)
class Work:
    """A heavy job as a function and its arguments, kept apart so that a cluster backend can ship them:
    calling it runs ``fn(ctx, **kwargs)``.

    ``fn`` is a module-level function (workers import it by name); a :class:`~engine.datasets.LabDataset`
    among ``kwargs`` is stored once per dataset in the cluster's object store and shared by every task on a
    node. ``lost`` runs on the server when the process running the work died before it ended, with the
    reason in words: it marks what the work left running on disk (a run's record) as interrupted. ``ended``
    runs on the server once the job has run and ended, however it ended (not for a job cancelled while it
    waited in the queue): it lets the server prepare what people will look at next, e.g. an experiment's
    results; what it raises is logged, never the job's.
    """

    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]
    lost: Callable[[str], object] | None = None
    ended: Callable[[], object] | None = None

    def __call__(self, ctx: JobContext) -> Any:
        return self.fn(ctx, **self.kwargs)


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
    seq: int = 0  # submission order
    where: str = ""  # where a cluster runs it (see JobSnapshot.where)


class _Lane:
    """One device lane's queue: a FIFO per owner, owners taking turns round-robin.

    Owners sit on a ring in the order they started waiting (the submission number of their oldest job
    queued since their queue was last empty) and keep their place while they have jobs queued. The next
    job is the oldest of the first owner on the ring after the one who started last; so round ``r`` takes
    every owner's ``r``-th job, in that order, which is how :meth:`position` numbers the queue. Callers
    hold the runner's lock.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.wake = threading.Condition(lock)
        self.queues: dict[str, collections.deque[_Job]] = {}  # owner -> their queued jobs, oldest first
        self.ring: dict[str, int] = {}  # owner -> their place on the ring
        self.last = ("", 0)  # the owner who started last and their place on the ring then
        self._positions: dict[str, int] | None = None  # job id -> place in the order (1 = next), until a change

    def __bool__(self) -> bool:
        return bool(self.queues)

    def push(self, job: _Job) -> None:
        if job.owner not in self.queues:
            self.queues[job.owner], self.ring[job.owner] = collections.deque(), job.seq
        self.queues[job.owner].append(job)
        self._positions = None
        self.wake.notify()

    def remove(self, job: _Job) -> None:
        queue = self.queues.get(job.owner)
        if queue is not None and job in queue:
            queue.remove(job)
            self._drop_if_empty(job.owner)
            self._positions = None

    def pop(self) -> _Job:
        """The next job to start (the queue must not be empty)."""
        owner = self._rotation()[0]
        job = self.queues[owner].popleft()
        self.last = (owner, self.ring[owner])
        self._drop_if_empty(owner)
        self._positions = None
        return job

    def position(self, job: _Job) -> int:
        """The job's place in the order the worker will take the queued jobs (1 = next); 0 when not queued."""
        if self._positions is None:
            rotation = self._rotation()
            turns = sorted(
                (turn, rank, queued.id)
                for rank, owner in enumerate(rotation)
                for turn, queued in enumerate(self.queues[owner])
            )
            self._positions = {job_id: i + 1 for i, (_, _, job_id) in enumerate(turns)}
        return self._positions.get(job.id, 0)

    def _rotation(self) -> list[str]:
        """Owners in the order of their next turns: those after the last one to start, then the rest (that one
        last, also when they left the ring and came back)."""
        ring = sorted(self.ring, key=self.ring.__getitem__)
        pivot = self.ring.get(self.last[0], self.last[1])
        return [o for o in ring if self.ring[o] > pivot] + [o for o in ring if self.ring[o] <= pivot]

    def _drop_if_empty(self, owner: str) -> None:
        if not self.queues[owner]:
            del self.queues[owner], self.ring[owner]


class JobRunner:
    """Runs jobs on worker threads: one worker per lane for heavy jobs, a thread each for light ones."""

    backend = "threads"  # where heavy jobs run: "threads" here, "ray" for engine.ray_backend.RayRunner

    def __init__(
        self, *, max_events: int = 20_000, keep_finished_s: float = 24 * 3600, per_user_cap: bool = True
    ) -> None:
        """``per_user_cap``: hold each user to their limit of heavy jobs (a shared server); False for one
        person's command-line run, which sends a whole experiment at once."""
        self._per_user_cap = per_user_cap
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._lanes: dict[str, _Lane] = {}
        self._ids = itertools.count(1)
        self._max_events = max_events
        self._keep_finished_s = keep_finished_s
        self._every: dict[str, threading.Event] = {}  # periodic functions by name -> their stop flag

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
        """Queue ``fn``; returns the job id at once.

        A heavy job is refused with :class:`LimitReached` when ``owner`` already has as many heavy jobs
        queued or running as their limit (``limits_for(owner).max_jobs``) allows.
        """
        cap = self._cap(owner) if heavy else 0  # read before the lock: it may read a file
        seq = next(self._ids)
        job_id = f"job-{seq}-{int(time.time() * 1000) % 100000}"
        job = _Job(job_id, title, owner, group, tag, lane, fn, collections.deque(maxlen=self._max_events))
        job.heavy, job.seq = heavy, seq
        with self._lock:
            self._forget_old()
            if heavy and (active := self._active(owner)) >= cap:
                held = "the most this server allows per user" if active == cap else f"and this server allows {cap}"
                raise LimitReached(
                    f"you already have {active} jobs queued or running, {held}: wait for some to finish or "
                    "cancel some (an admin can raise the limit)"
                )
            self._jobs[job_id] = job
            if not heavy:
                threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True).start()
                return job_id
            if lane not in self._lanes:
                self._lanes[lane] = _Lane(self._lock)
                for slot in range(self._slots(lane)):
                    name = f"lane-{lane}-{slot}"
                    threading.Thread(target=self._worker, args=(lane,), name=name, daemon=True).start()
            self._lanes[lane].push(job)
        return job_id

    def _cap(self, owner: str) -> int:
        return limits.limits_for(owner).max_jobs if self._per_user_cap else sys.maxsize

    def cluster(self) -> ClusterInfo | None:
        """The cluster the heavy jobs run on; None: this process's threads."""
        return None

    def room(self, owner: str) -> int:
        """How many more heavy jobs ``owner`` may submit now (their limit less those queued or running)."""
        cap = self._cap(owner)
        with self._lock:
            return max(0, cap - self._active(owner))

    def check_room(self, owner: str, count: int, *, what: str, fewer: str = "ask for fewer") -> None:
        """Refuse ``count`` heavy jobs at once, before any is submitted, when ``owner`` has no room for all.

        ``what`` names the batch in the message ("this experiment"), ``fewer`` says how to ask for less.
        """
        room, cap = self.room(owner), self._cap(owner)
        if count > room:
            raise LimitReached(
                f"{what} needs {count} jobs and you have room for {room} more (at most {cap} jobs queued or "
                f"running per user on this server): wait for some to finish, cancel some, or {fewer} "
                "(an admin can raise the limit)"
            )

    def cancel(self, job_id: str, *, owner: str | None = None, admin: bool = False, keep: bool = False) -> None:
        """Cancel a queued job at once, or ask a running one to stop at its next step.

        Only the job's ``owner`` may cancel it, or anyone with ``admin`` (``owner`` None: the server itself,
        as in the CLI and tests). With ``keep``, a running job is asked to keep what it has (a job that
        cannot keep anything stops as cancelled); a queued job has nothing to keep and is cancelled either way.
        """
        with self._lock:
            job = self._get(job_id, None if admin else owner)
            job.keep = (job.keep and keep) if job.stop.is_set() else keep  # a cancel wins, in either order
            job.stop.set()
            if job.status == "queued":  # still in its queue: the worker pops and starts under this lock
                if job.lane in self._lanes:
                    self._lanes[job.lane].remove(job)
                job.status, job.finished, job.fn = "cancelled", time.time(), None

    def snapshot(self, job_id: str) -> JobSnapshot:
        """One job, with its events."""
        with self._lock:
            return self._snap(self._get(job_id, None), events=True)

    def list(self, *, owner: str | None = None, group: str | None = None, events: bool = True) -> list[JobSnapshot]:
        """Jobs, oldest first, optionally of one owner or group.

        ``events=False`` leaves every snapshot's events out (``events=()``): cheap enough to poll every
        second with many long jobs; :meth:`snapshot` then gives the events of the jobs a page draws.
        """
        with self._lock:
            jobs = [j for j in self._jobs.values() if owner in (None, j.owner) and group in (None, j.group)]
            return [self._snap(j, events=events) for j in jobs]

    def usage(self) -> dict[str, dict[str, float]]:
        """Per owner: jobs ``queued``, ``running`` and ``finished`` and ``seconds`` of running time (heavy and
        light, finished or not), over the jobs the runner still remembers (finished ones for a day)."""
        now, out = time.time(), dict[str, dict[str, float]]()
        with self._lock:
            for job in self._jobs.values():
                row = out.setdefault(job.owner, {"queued": 0, "running": 0, "finished": 0, "seconds": 0.0})
                row["finished" if job.status in FINISHED else job.status] += 1
                if job.started:
                    row["seconds"] += (job.finished or now) - job.started
        return out

    def every(self, seconds: float, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` every ``seconds`` on a daemon thread, the first time ``seconds`` from now.

        Its exceptions are logged and the next round runs all the same; a second ``every`` with a ``name``
        already registered does nothing.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"seconds={seconds!r} is not accepted: expected a number of seconds above 0")
        with self._lock:
            if name in self._every:
                return
            stop = self._every[name] = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                try:
                    fn()
                except Exception:
                    log.exception("periodic %s failed; it runs again in %s s", name, seconds)

        threading.Thread(target=loop, name=f"every-{name}", daemon=True).start()

    def stop_every(self, name: str) -> None:
        """Stop the periodic function registered as ``name`` (its current round finishes); none: nothing."""
        with self._lock:
            stop = self._every.pop(name, None)
        if stop is not None:
            stop.set()

    def wait(self, job_id: str, timeout: float = 60.0) -> JobSnapshot:
        """Block until the job has finished (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while (snap := self.snapshot(job_id)).status not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {snap.status} after {timeout} s")
            time.sleep(0.02)
        return snap

    def _active(self, owner: str) -> int:
        """Heavy jobs of ``owner`` queued or running (under the lock)."""
        return sum(j.heavy and j.owner == owner and j.status in ("queued", "running") for j in self._jobs.values())

    def _get(self, job_id: str, owner: str | None) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"job_id={job_id!r} is not a job of this server")
        if owner is not None and job.owner != owner:
            raise JobError(f"job {job_id!r} belongs to another user")
        return job

    def _snap(self, job: _Job, *, events: bool) -> JobSnapshot:
        lane = self._lanes.get(job.lane)
        position = lane.position(job) if lane is not None and job.status == "queued" else 0
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
            tuple(job.events) if events else (),
            job.result,
            job.where,
        )

    def _worker(self, lane: str) -> None:
        queue = self._lanes[lane]
        while True:
            with self._lock:
                while not queue:
                    queue.wake.wait()
                job = queue.pop()
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
            # a job acts as the user who submitted it: what it makes is theirs, what it lists is what they see
            with owners.acting_as(job.owner):
                result = self._call(job, fn)
            stopped_as = "stopped" if job.keep else "cancelled"
            status, error = (stopped_as if job.stop.is_set() else "done"), ""
        except Interrupted as err:  # its process died: nothing of it ran to an end, what it kept can be resumed
            log.warning("job %s (%s) interrupted: %s", job.id, job.title, err)
            result, status, error = None, "interrupted", user_message(err)
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
        if isinstance(fn, Work) and fn.ended is not None:
            try:
                fn.ended()
            except Exception:  # the job's own end is recorded already; this was a courtesy
                log.exception("job %s (%s): its end hook failed", job.id, job.title)

    def _slots(self, lane: str) -> int:
        """Heavy jobs of ``lane`` that run at once: one on this machine's threads."""
        return 1

    def _call(self, job: _Job, fn: Callable[[JobContext], Any]) -> Any:
        """Run a started job's function, acting as its owner already; returns its result or raises."""
        with threads.heavy_job() if job.heavy else contextlib.nullcontext():
            return fn(JobContext(job, self._lock))


def runner_kind() -> str:
    """``SYNTHLAB_RUNNER``: ``threads`` (the default) or ``ray``, checked (ray needs its package)."""
    value = os.environ.get(RUNNER_ENV, "").strip() or "threads"
    if value not in BACKENDS:
        raise ValueError(f"{RUNNER_ENV}={value!r} is not accepted: expected one of {', '.join(BACKENDS)}")
    if value == "ray" and importlib.util.find_spec("ray") is None:
        raise RuntimeError(f"{RUNNER_ENV}=ray needs the ray package: install it with `pip install ray==2.60.0`")
    return value


def make_runner() -> JobRunner:
    """The job runner ``SYNTHLAB_RUNNER`` names: ``threads`` (the default: this process's threads) or ``ray``
    (Ray tasks on the cluster ``SYNTHLAB_RAY_ADDRESS`` names, see :mod:`engine.ray_backend`)."""
    if runner_kind() == "threads":
        return JobRunner()
    from engine.ray_backend import RayRunner  # imports ray: only when chosen

    return RayRunner()
