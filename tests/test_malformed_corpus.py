"""The malformed-input corpus (tests/malformed_corpus.py) against :func:`engine.sources.load`.

Each case asserts (a) its own outcome: refused with a SourceError matching a regex, or loaded with the
named files skipped for the expected reasons and the expected images and classes kept; (b) that zipfile
decompressed no more than the archive's budget, and far less for bombs, counted independently of the
engine; (c) that nothing was written outside the workspace (a zip slip's target names included); and
(d) that reasons and messages carry no object reprs and no server paths.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest

from engine import store
from tests import malformed_corpus as corpus

# Cases the engine does not handle yet: case id -> what the case expects. Each is xfail(strict=True), so
# that a fix turns it into a failure here until its line is removed.
KNOWN_GAPS: dict[str, str] = {}

ESCAPE_DIRS = (Path("/"), Path("/tmp"), Path("/etc"))  # where an absolute or deep ../ slip would land


def _params() -> list[Any]:
    params = []
    for case in corpus.cases():
        marks = [pytest.mark.timeout(case.timeout)]
        if case.id in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case.id]))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def _files_outside(tmp_path: Path, ws: Path) -> set[str]:
    """Every path under ``tmp_path`` but outside ``ws``, links not followed."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(tmp_path, followlinks=False):
        if Path(dirpath) == ws:
            dirnames.clear()
            continue
        found.update(os.path.join(dirpath, name) for name in dirnames + filenames)
    found.discard(str(ws))
    return found


def test_corpus_is_large_and_ids_are_unique() -> None:
    cases = corpus.cases()
    assert len(cases) >= 100
    assert len({c.id for c in cases}) == len(cases)
    assert set(KNOWN_GAPS) <= {c.id for c in cases}


@pytest.mark.parametrize("case", _params())
def test_malformed_input(case: corpus.Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. Build the input; only the workspace may change from here on.
    ws, inputs = tmp_path / "ws", tmp_path / "in"
    inputs.mkdir()
    monkeypatch.setenv("SYNTHLAB_HOME", str(ws))
    monkeypatch.setenv("SYNTHLAB_FOLDER_ROOTS", str(inputs))
    source = case.build(store.uploads_dir() if case.uploaded else inputs)
    archive_bytes = source.stat().st_size if case.kind == "zip" and source.is_file() else 0
    before = _files_outside(tmp_path, ws)
    assert archive_bytes < 10 * corpus.MiB  # the corpus stays small on disk, bombs included

    # 2. Load, counting what zipfile decompresses.
    outcome = corpus.run(case, source)

    # 3. (a) The outcome this case owes.
    if case.error is not None:
        assert outcome.error is not None, f"expected a SourceError matching {case.error!r}, the source loaded"
        assert re.search(case.error, str(outcome.error)), str(outcome.error)
        messages = [str(outcome.error)]
    else:
        assert outcome.error is None, f"expected a load, got: {outcome.error}"
        decoded = outcome.decoded
        assert decoded is not None
        skipped = {file.split("\0")[0]: reason for file, reason in decoded.report.skipped}
        for name, pattern in case.skipped.items():
            assert name in skipped, f"{name!r} not skipped; skipped: {sorted(skipped)}"
            assert re.search(pattern, skipped[name]), f"{name!r}: {skipped[name]!r} does not match {pattern!r}"
        if case.exact:
            others = {n: r for n, r in skipped.items() if n not in case.skipped and not r.startswith("empty class")}
            assert not others, f"unexpected skips: {others}"
        if case.kept is not None:
            assert len(decoded.labels) == case.kept == decoded.images.shape[0]
        if case.classes is not None:
            assert decoded.class_names == case.classes
        if case.side is not None:
            assert decoded.images.shape[-2:] == (case.side, case.side)
        messages = [reason for _, reason in decoded.report.skipped]
        if case.kind == "zip":  # the engine's own count agrees with the one taken from zipfile
            assert decoded.report.bytes_read == outcome.read_bytes

    # 4. (b) Bytes decompressed: within the archive's budget, and far less for bombs.
    assert outcome.read_bytes <= corpus.budget(archive_bytes, case.limits) + 1  # one byte past it: how a reader knows
    if case.max_read is not None:
        assert outcome.read_bytes <= case.max_read, f"{outcome.read_bytes / 2**20:.0f} MiB decompressed"

    # 5. (c) Nothing written outside the workspace.
    assert _files_outside(tmp_path, ws) == before
    assert not (tmp_path / "evil.txt").exists()
    for name in case.sentinels:
        for folder in (tmp_path, tmp_path.parent, *ESCAPE_DIRS):
            assert not os.path.lexists(folder / name), folder / name

    # 6. (d) Messages a user sees: no object reprs, no server folders but the path they gave and the allowed roots.
    given = ([] if case.uploaded else [str(source)]) + (
        [str(ws), str(inputs)] if "outside the folders" in " ".join(messages) else []
    )
    for message in messages:
        assert not re.search(r"object at 0x[0-9a-f]+", message), message
        assert str(tmp_path) not in functools.reduce(lambda text, path: text.replace(path, ""), given, message), message
