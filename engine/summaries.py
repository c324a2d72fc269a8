"""An experiment's results, computed once per state of its runs and shared by every page and job of the server.

What the Compare page shows of an experiment (its summary with the bootstrap intervals, the headline and
health warnings, every finished run's metrics) depends only on which of its runs have ended and how. Here it
is kept per workspace, experiment and state of its runs (:func:`signature`: each run's id, status and finish
time), computed once for each state: a caller asking while another computes the same state waits for that
computation instead of starting its own. Only the newest state of an experiment is kept, for at most
``MAX_EXPERIMENTS`` experiments and ``MAX_CURVE_VALUES`` values of ROC and PR curves in all (x and y; the curves
are most of the memory: a run on 10,000 test images of 10 classes has some 220,000 values); the least recently
asked for (opened, or a run of it ended) go first. Results always match the state they name: a run that ends
while they are computed makes the computation start again (up to ``ATTEMPTS`` times), and a caller holding an
older state than the one kept gets the kept one, newer, rather than replacing it.

When a run of an experiment ends on the server, its job asks for the new state at once (:func:`refresh_soon`),
on one background thread: the person who started the run usually opens Compare a moment later, and eight
people whose runs end together would otherwise each make the server compute at the moment they all look
(``bench/compare_cold.py``: 0.23 s per page alone on a slow machine, several times that together). The
results are shared, not copied: callers read them and never change them (some of their fields are plain
dicts). Where this stops: no figures (those are the pages'), no rights (callers check who may see an
experiment before asking for it).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from engine import experiments, runs, store, verdicts
from engine.experiments import ExperimentSummary
from engine.metrics import Metrics

log = logging.getLogger(__name__)
MAX_EXPERIMENTS = 64  # experiments whose results are kept; the least recently asked for goes first
MAX_CURVE_VALUES = 8_000_000  # ROC and PR x and y values kept in all, 32 bytes each as read back (about 244 MiB):
# a default experiment (4 mixes x 3 seeds) on CIFAR-10's 10,000 test images has some 2.6 million, so three fit
# (bench/results_memory.py); one experiment is always kept, however large
ATTEMPTS = 3  # computations of one experiment's results while its runs keep changing; the last one is kept
Signature = tuple[tuple[str, str, float], ...]  # (run id, status, finished) of each run, in the experiment's order


@dataclass(frozen=True)
class Results:
    """What the Compare page shows of an experiment in one state of its runs."""

    signature: Signature
    summary: ExperimentSummary
    headline: verdicts.Headline | None  # None until the baseline and a mix have finished runs
    warnings: tuple[str, ...]  # health warnings about the baseline and the test set
    metrics: Mapping[tuple[str, int], Metrics]  # every finished run's metrics, by (mix label, seed)

    @property
    def status(self) -> dict[str, str]:
        """Each run's status in this state, by run id."""
        return {run_id: status for run_id, status, _ in self.signature}


@dataclass
class _Slot:
    """One state's results: being computed until ``ready`` is set, then ``results`` or ``error``."""

    ready: threading.Event = field(default_factory=threading.Event)
    results: Results | None = None
    error: BaseException | None = None
    values: int = 0  # ROC and PR curve values (x and y) in ``results``


_lock = threading.Lock()
_slots: collections.OrderedDict[tuple[Path, str], tuple[Signature, _Slot]] = collections.OrderedDict()
_pending: queue.SimpleQueue[tuple[Path, str]] = queue.SimpleQueue()
_worker: threading.Thread | None = None


def signature(exp_id: str) -> Signature:
    """The state of an experiment's runs: (run id, status, finish time) of each, read from their records."""
    record = experiments.load_experiment(exp_id)
    recs = [runs.load_record(run_id) for _, _, run_id in record.run_ids]
    return tuple((r.id, r.status, r.finished) for r in recs)


def results(exp_id: str, state: Signature | None = None) -> Results:
    """The results of ``exp_id`` in ``state`` (its runs' state as read now when None), computed at most once;
    those of a newer state when runs ended meanwhile (``Results.signature`` names the state they are of).

    Raises what :func:`engine.experiments.summarize` raises (e.g. an unknown experiment); a failed
    computation is not kept, so the next caller tries again.
    """
    state = signature(exp_id) if state is None else state
    key = (store.home(), exp_id)
    with _lock:
        kept = _slots.get(key)
    if kept is not None and kept[0] != state:
        state = signature(exp_id)  # another state is kept: the caller's may be the older one
    with _lock:
        kept = _slots.get(key)
        if kept is not None and kept[0] == state:
            slot, mine = kept[1], False
        else:
            slot, mine = _Slot(), True
            _slots[key] = (state, slot)
        _slots.move_to_end(key)
    if mine:
        try:
            slot.results = _compute(exp_id, state)
            slot.values = sum(len(c.x) + len(c.y) for m in slot.results.metrics.values() for c in (*m.roc, *m.pr))
            with _lock:
                if _slots.get(key, (None, None))[1] is slot:  # kept under the state it is of
                    _slots[key] = (slot.results.signature, slot)
                _trim()
        except BaseException as err:  # not kept: waiters get the error, the next caller tries again
            slot.error = err if isinstance(err, Exception) else RuntimeError("computing the results was interrupted")
            with _lock:
                if _slots.get(key, (None, None))[1] is slot:
                    del _slots[key]
            raise
        finally:
            slot.ready.set()
    slot.ready.wait()
    if slot.error is not None:
        raise slot.error
    assert slot.results is not None  # set before ready, when there was no error
    return slot.results


def _trim() -> None:
    """Let go of the least recently asked for experiments past the limits, never the newest; callers hold the lock."""
    values = sum(slot.values for _, slot in _slots.values())
    while len(_slots) > 1 and (len(_slots) > MAX_EXPERIMENTS or values > MAX_CURVE_VALUES):
        _, (_, oldest) = _slots.popitem(last=False)
        values -= oldest.values


def is_ready(exp_id: str, state: Signature) -> bool:
    """Whether the results of ``exp_id`` in ``state`` are computed, so that asking for them is quick."""
    with _lock:
        kept = _slots.get((store.home(), exp_id))
    return kept is not None and kept[0] == state and kept[1].ready.is_set() and kept[1].error is None


def refresh_soon(exp_id: str) -> None:
    """Compute the results of ``exp_id`` for its runs' current state on the background thread (a run ended)."""
    global _worker
    _pending.put((store.home(), exp_id))
    with _lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_refresh_loop, name="experiment-results", daemon=True)
            _worker.start()


def _refresh_loop() -> None:
    while True:
        asked = [_pending.get()]
        while not _pending.empty():  # runs that ended meanwhile: each experiment once, in its newest state
            asked.append(_pending.get())
        for home, exp_id in dict.fromkeys(asked):
            if home != store.home():  # the process moved to another workspace (only tests do): nothing to warm
                continue
            try:
                results(exp_id)
            except Exception as err:  # the page that asks for them shows the error; the server goes on
                log.warning("could not compute the results of experiment %s: %s", exp_id, err)


def _compute(exp_id: str, state: Signature) -> Results:
    for _ in range(ATTEMPTS):
        summary = experiments.summarize(exp_id)
        after = signature(exp_id)
        if after == state:  # no run changed while the summary read them
            break
        state = after
    ended = {run_id for run_id, status, _ in state if status == "done"}
    metrics = {}
    for label, seed, run_id in summary.experiment.run_ids:
        found = runs.load_metrics(run_id) if run_id in ended else None
        if found is not None:
            metrics[(label, seed)] = found
    return Results(
        state,
        summary,
        verdicts.headline(summary),
        tuple(verdicts.health_warnings(summary)),
        MappingProxyType(metrics),
    )
