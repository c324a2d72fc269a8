"""Heavy jobs as Ray tasks on a cluster, behind the job runner's interface (``SYNTHLAB_RUNNER=ray``).

:class:`RayRunner` is a :class:`~engine.jobs.JobRunner` whose queue, per-user lanes taken in turns, limits,
snapshots and cancel stay on the server; only where a heavy job runs changes. A server thread per running
job submits it as one Ray task with explicit resources (``num_cpus``, ``num_gpus`` on the ``cuda`` lane,
``memory`` when asked) and no automatic retry (a retry would start a run over; Resume continues it from
its checkpoint instead). As many heavy jobs run at once per lane as the cluster has room for: its CPUs
divided by the CPUs per job, its GPUs on the ``cuda`` lane, or the ``slots`` given. The task gets a
small context (job id, owner, the server's settings, a handle of one :class:`_JobChannel` actor); it acts
as the job's owner, and a thread of the task sends its progress and events to the channel every
:data:`POLL_S` seconds and reads its stop flag back; the server thread copies what the channel holds into the job every
:data:`POLL_S` seconds, so :meth:`~engine.jobs.JobRunner.snapshot` reads as with threads. Cancel is
cooperative: the stop flag reaches the task at its next report, and the task stops as on threads (a run
keeps its last checkpoint); a task still running :data:`FORCE_AFTER_S` seconds after the stop is ended
with ``ray.cancel(force=True)``. A :class:`~engine.datasets.LabDataset` among a job's arguments is
``ray.put`` once per dataset key and passed by reference: the object store holds one copy per node, read
by every task there (the tasks still deserialize their own tensors).

Storage: the workspace (``SYNTHLAB_HOME``) is a shared filesystem mounted at the same path on every node,
and the lab's code sits at the same path too (the driver's ``sys.path`` is the workers'). Workers write run
records, checkpoints, weights, sets and generators with the atomic writers of :mod:`engine.store` (write to a
temporary file, fsync, rename), the same files the pages and the CLI read. Why not ship results back
through the object store and write them on the server: checkpoints are written every epoch so that a run
survives its worker, and they must survive the server too; and the caches (decoded datasets, features,
Stable Diffusion requests) are shared by every node through the same files. No record has two writers:
while a task lives, the process running it is the only writer of its run record (it records its own pid,
host and node, and beats as a ``worker`` through :mod:`engine.heartbeat`); the server writes a run record
only after Ray reports the task dead (its worker or node died: the run is marked ``interrupted``, naming
the node, and Resume continues it from its last checkpoint on any node).

A server restart: Ray ends a driver's tasks with the driver, so tasks are not re-attached. Each run they
leave is marked honestly: by its own process when it exits cleanly, else by the server's sweep once the
worker's heartbeat is stale (at once on the server's host, after a minute elsewhere), as interrupted with
the worker's node; Resume continues it. Where this stops: no scheduling policy beyond the lanes of
:mod:`engine.jobs`, no autoscaling, no warm Stable Diffusion actor (a worker process keeps the pipelines
it loaded for the next task it runs).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine import heartbeat, owners, runs, threads
from engine.datasets import ImageSet, LabDataset
from engine.jobs import Cancelled, Interrupted, JobContext, JobRunner, Unavailable, Work, _Job

log = logging.getLogger(__name__)
ADDRESS_ENV = "SYNTHLAB_RAY_ADDRESS"
POLL_S = 0.5  # seconds between two copies of a task's progress, and between a task's reports
FORCE_AFTER_S = 120.0  # a task still running this long after its stop is ended by force
SHARED_DATASETS = 8  # datasets kept in the object store for new tasks (tasks queued hold their own)
_SETTINGS = ("SYNTHLAB_", "HF_HUB_OFFLINE")  # the server's settings a task takes with it
_NOT_SENT = ("SYNTHLAB_RUNNER", ADDRESS_ENV, threads.ENV)  # the backend's own, and the thread budget (per task)
_ADDRESS = re.compile(r"(ray://)?[\w.-]+:\d{1,5}")


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster, as Ray reports it."""

    node_id: str  # Ray's node id (hex)
    ip: str
    alive: bool
    cpus: float  # CPUs the node offers to tasks
    gpus: float
    memory_gb: float  # memory the node offers to tasks, GB


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster the heavy jobs run on: the address joined and its nodes (dead ones too)."""

    address: str
    nodes: tuple[NodeInfo, ...]

    @property
    def total_cpus(self) -> float:
        return sum(n.cpus for n in self.nodes if n.alive)

    @property
    def total_gpus(self) -> float:
        return sum(n.gpus for n in self.nodes if n.alive)


def describe_node(ip: str, node_id: str) -> str:
    """How a node reads in the panels and in an interrupted run's reason: "node 10.0.0.5 (3f2a9c1d)"."""
    return f"node {ip} ({node_id[:8]})"


def check_address(value: str) -> str:
    """``value`` when it names a cluster: ``local`` (or empty), ``auto``, ``ray://host:port`` or ``host:port``."""
    if value in ("", "local", "auto") or _ADDRESS.fullmatch(value):
        return value
    raise ValueError(
        f"{ADDRESS_ENV}={value!r} is not accepted: expected auto, local, ray://host:10001 or host:6379 "
        "(the head node's address)"
    )


def connect(address: str | None = None) -> str:
    """Join the cluster ``address`` names (default: ``SYNTHLAB_RAY_ADDRESS``; "local" or unset starts a local
    Ray in this process with this machine's thread budget); returns the address joined. Idempotent: when
    this process has joined one already, that one's address."""
    value = check_address((os.environ.get(ADDRESS_ENV, "") if address is None else address).strip())
    if not ray.is_initialized():
        if value in ("", "local"):
            ray.init(num_cpus=threads.total_threads(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=value, log_to_driver=False)
    return str(ray.get_runtime_context().gcs_address or value or "local")


def cluster_info(address: str) -> ClusterInfo:
    """The nodes of the cluster this process joined."""
    nodes = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        nodes.append(
            NodeInfo(
                node_id=str(node["NodeID"]),
                ip=str(node.get("NodeManagerAddress", "")),
                alive=bool(node.get("Alive", False)),
                cpus=float(res.get("CPU", 0.0)),
                gpus=float(res.get("GPU", 0.0)),
                memory_gb=float(res.get("memory", 0.0)) / 1e9,
            )
        )
    return ClusterInfo(address, tuple(nodes))


class _JobChannel:
    """The actor between the server and its tasks: progress, events and where each task runs, buffered per
    job until the server takes them, and the stop flags the tasks read."""

    def __init__(self) -> None:
        self._updates: dict[str, dict[str, Any]] = {}
        self._stops: dict[str, tuple[bool, bool]] = {}

    def push(self, job_id: str, update: dict[str, Any]) -> tuple[bool, bool]:
        """A task's news since its last report; returns (stop, keep) for it."""
        held = self._updates.setdefault(job_id, {"events": []})
        held["events"].extend(update.pop("events", ()))
        held.update(update)
        return self._stops.get(job_id, (False, False))

    def take(self, job_id: str) -> dict[str, Any]:
        return self._updates.pop(job_id, {})

    def stop(self, job_id: str, keep: bool) -> None:
        self._stops[job_id] = (True, keep)

    def forget(self, job_id: str) -> None:
        self._updates.pop(job_id, None)
        self._stops.pop(job_id, None)


JobChannel: Any = ray.remote(num_cpus=0)(_JobChannel)  # typed loosely: Ray's stubs do not follow actors


def _new_channel() -> Any:
    """A channel actor on this process's own node: a worker node that dies then takes only its own tasks
    with it, never the channel every later job reports through. Should the actor itself die, it restarts
    empty and calls made meanwhile are retried: the server passes a stop on at every poll, and a task's
    next report carries its progress again."""
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return JobChannel.options(scheduling_strategy=here, max_restarts=-1, max_task_retries=-1).remote()


@dataclass(frozen=True)
class _TaskSpec:
    """What a task needs besides its function and arguments (small: it travels with every task)."""

    job_id: str
    owner: str
    channel: Any  # the runner's _JobChannel handle
    env: dict[str, str]  # the server's settings
    names: tuple[str, ...]  # the keyword names of the values that follow the spec
    cpus: float


class _TaskContext(JobContext):
    """A :class:`~engine.jobs.JobContext` inside a task: reports are buffered, and a thread of the task sends them
    to the channel every POLL_S seconds and reads the stop flags back, so the work never waits on the network
    (and a report made just before a long step still arrives)."""

    def __init__(self, job_id: str, channel: Any) -> None:
        self._id, self._channel = job_id, channel
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {"events": []}
        self._stop = self._keep = False

    def emit(self, event: Any) -> None:
        threads.apply()
        with self._lock:
            self._pending["events"].append(event)

    def set_progress(self, fraction: float, message: str = "") -> None:
        threads.apply()
        with self._lock:
            self._pending["progress"] = min(1.0, max(0.0, float(fraction)))
            if message:
                self._pending["message"] = message

    def should_stop(self) -> bool:
        threads.apply()
        return self._stop

    def keep_on_stop(self) -> bool:
        return self._keep

    def flush(self, **extra: Any) -> None:
        """Send what is pending (and ``extra``) now; read the stop flags back."""
        with self._lock:
            update, self._pending = {**self._pending, **extra}, {"events": []}
        stop, keep = ray.get(self._channel.push.remote(self._id, update))
        self._stop, self._keep = self._stop or stop, keep

    def keep_flushing(self, done: threading.Event) -> None:
        """Flush every POLL_S seconds until ``done`` is set (a thread of the task runs this)."""
        while not done.wait(POLL_S):
            try:
                self.flush()
            except ray.exceptions.RayError as err:  # the next round tries again
                log.warning("job %s: progress not sent: %s", self._id, str(err).splitlines()[0])


def _execute(spec: _TaskSpec, fn: Callable[..., Any], *values: Any) -> Any:
    """The body of every task: take the server's settings, beat as a worker on this node, report where it runs,
    then run ``fn(ctx, **kwargs)`` as the job's owner with the task's CPUs as its thread budget."""
    # 1. The server's settings, for this task only (a worker process runs one task at a time).
    before = {k: os.environ.get(k) for k in (*spec.env, threads.ENV)}
    os.environ.update(spec.env)
    os.environ[threads.ENV] = str(max(1, int(spec.cpus)))
    try:
        # 2. Where it runs: the heartbeat names the node, so a run left behind names it too.
        where = describe_node(ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id())
        heartbeat.start("worker", where=where)
        ctx, done = _TaskContext(spec.job_id, spec.channel), threading.Event()
        ctx.flush(where=where, pid=os.getpid())
        flusher = threading.Thread(target=ctx.keep_flushing, args=(done,), name="job-reports", daemon=True)
        flusher.start()
        # 3. The work, as its owner.
        try:
            with owners.acting_as(spec.owner), threads.heavy_job():
                return fn(ctx, **dict(zip(spec.names, values, strict=True)))
        finally:
            done.set()
            flusher.join()
            with contextlib.suppress(ray.exceptions.RayError):  # the last news; never in place of the job's own end
                ctx.flush()
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_remote_execute: Any = ray.remote(_execute)


def _cause(err: ray.exceptions.RayTaskError) -> Exception:
    """The exception a task raised, as the lab raised it (its message names the field and value)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
        return cause
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return RuntimeError(lines[-1] if lines else "the task failed without a message")


class RayRunner(JobRunner):
    """A :class:`~engine.jobs.JobRunner` whose heavy jobs run as Ray tasks; light jobs stay on threads here."""

    backend = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        slots: int | None = None,
        cpus_per_job: float = 1.0,
        memory_gb: float = 0.0,
        force_after_s: float = FORCE_AFTER_S,
        **kwargs: Any,
    ) -> None:
        """``slots``: heavy jobs of a lane running at once (default: the cluster's CPUs over ``cpus_per_job``;
        its GPUs on the cuda lane); ``memory_gb``: memory each task reserves (0: none reserved)."""
        if not cpus_per_job > 0 or memory_gb < 0:
            raise ValueError(
                f"cpus_per_job={cpus_per_job!r}, memory_gb={memory_gb!r} are not accepted: expected CPUs above 0 "
                "and GB of 0 or more"
            )
        super().__init__(**kwargs)
        self.address = connect(address)
        self._channel: Any = _new_channel()
        self._slot_count, self._cpus, self._memory_gb = slots, cpus_per_job, memory_gb
        self._force_after = force_after_s
        self._shared: collections.OrderedDict[Any, tuple[Any, Any]] = collections.OrderedDict()
        self._shared_lock = threading.Lock()
        self._tasks: dict[str, Any] = {}  # job id -> its running task

    def cluster(self) -> ClusterInfo:
        return cluster_info(self.address)

    def _slots(self, lane: str) -> int:
        if self._slot_count:
            return self._slot_count
        resources = ray.cluster_resources()
        if lane == "cuda":
            return max(1, int(resources.get("GPU", 0)))
        return max(1, int(resources.get("CPU", 1) // self._cpus))

    def _share(self, value: Any) -> Any:
        """A dataset or image set as one object-store reference per dataset (or set object); else the value."""
        if isinstance(value, LabDataset):
            key: Any = ("dataset", value.key)
        elif isinstance(value, ImageSet):
            key = ("set", id(value))  # the entry holds the set, so its id is not reused meanwhile
        else:
            return value
        with self._shared_lock:
            if key not in self._shared:
                self._shared[key] = (ray.put(value), value)
                while len(self._shared) > SHARED_DATASETS:
                    self._shared.popitem(last=False)
            self._shared.move_to_end(key)
            return self._shared[key][0]

    def _call(self, job: _Job, fn: Callable[[JobContext], Any]) -> Any:
        if not job.heavy:
            return super()._call(job, fn)
        # 1. The task: the function, its arguments (datasets by reference) and its resources.
        lost = fn.lost if isinstance(fn, Work) else None
        target, kwargs = (fn.fn, dict(fn.kwargs)) if isinstance(fn, Work) else (fn, {})
        env = {k: v for k, v in os.environ.items() if k.startswith(_SETTINGS) and k not in _NOT_SENT}
        spec = _TaskSpec(job.id, job.owner, self._channel, env, tuple(kwargs), self._cpus)
        gpus = 1 if job.lane == "cuda" else 0
        if gpus and not ray.cluster_resources().get("GPU"):
            raise Unavailable("this job asks for a GPU and no node of the cluster has one: choose the CPU")
        options: dict[str, Any] = {"num_cpus": self._cpus, "num_gpus": gpus, "max_retries": 0}
        if self._memory_gb:
            options["memory"] = int(self._memory_gb * 1e9)
        ref = _remote_execute.options(**options).remote(spec, target, *(self._share(v) for v in kwargs.values()))
        self._tasks[job.id] = ref
        # 2. Follow it until it ends; map how it ended onto the job.
        forced = False
        try:
            forced = self._follow(job, ref)
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            raise _cause(err) from err
        except ray.exceptions.RayError as err:  # its worker or node died, or the cluster could not run it
            reason = self._lost_reason(job, err, forced)
            if lost is not None:
                lost(reason)  # Ray says the task is dead: the server may write what it left running
            if forced or isinstance(err, ray.exceptions.TaskCancelledError):
                raise Cancelled(f"cancelled: {reason}") from err
            raise Interrupted(reason) from err
        finally:
            self._tasks.pop(job.id, None)
            self._channel.forget.remote(job.id)

    def _follow(self, job: _Job, ref: Any) -> bool:
        """Copy the task's news into the job and pass the job's stop on until the task ends; returns whether
        it had to be ended by force."""
        stop_since = 0.0
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            self._take(job)
            with self._lock:
                stop, keep = job.stop.is_set(), job.keep
            if ready:
                return False
            if stop:  # passed on at every poll: a channel that restarted meanwhile has forgotten it
                self._channel.stop.remote(job.id, keep)
                stop_since = stop_since or time.monotonic()
            if stop_since and time.monotonic() - stop_since > self._force_after:
                log.warning("job %s did not stop within %s s: its task is ended by force", job.id, self._force_after)
                ray.cancel(ref, force=True)
                ray.wait([ref], timeout=30)
                self._take(job)
                return True

    def _take(self, job: _Job) -> None:
        try:
            update: dict[str, Any] = ray.get(self._channel.take.remote(job.id))
        except ray.exceptions.RayError as err:  # no news this time; only the task's own end decides the job's
            log.warning("job %s: its progress could not be read: %s", job.id, str(err).splitlines()[0])
            return
        if not update:
            return
        with self._lock:
            job.events.extend(update.get("events", ()))
            if "progress" in update:
                job.progress = update["progress"]
            if update.get("message"):
                job.message = update["message"]
            if update.get("where"):
                job.where = update["where"]

    def _lost_reason(self, job: _Job, err: Exception, forced: bool) -> str:
        if forced:
            return f"it did not stop within {self._force_after:.0f} s and was ended (a run resumes from its checkpoint)"
        if job.where:
            return f"{runs.WORKER_STOPPED} on {job.where}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else "no reason given"
        return f"the cluster could not run it ({first})"

    def close(self) -> None:
        """End the tasks still running (by force: for a process that is leaving) and the channel actor; the
        cluster connection stays (see :func:`disconnect`)."""
        for ref in list(self._tasks.values()):
            with contextlib.suppress(ray.exceptions.RayError):
                ray.cancel(ref, force=True)
        ray.kill(self._channel)


def disconnect() -> None:
    """Leave the cluster (a local Ray started by :func:`connect` stops with it)."""
    if ray.is_initialized():
        ray.shutdown()
