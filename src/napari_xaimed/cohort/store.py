"""The output folder of a cohort run: one record per finished case, written as it arrives.

Layout of ``out/``::

    run.json              the job's parameters, versions, when it ran
    cases/<case>.json     one record per case: key, status, error, rows, seconds
    outputs/              per-case files (heatmap NIfTI + JSON) when the job writes any
    cases.csv/.parquet    the per-case table, rebuilt at the end of every run
    instances.csv/.parquet  per-instance rows (evaluation)
    summary.csv           the cohort summary
    hashes.json           SHA-256 of the input files, with the size and time they had

A case is *finished* when its record says ``ok`` under the same key (the input files' hashes and
the parameters): a rerun into the same folder skips it. Records are written to a temporary name
and renamed, so a run killed mid-write leaves no half record.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from napari_xaimed._core.provenance import _plain, file_sha256
from napari_xaimed.io.cases import Case


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(value), indent=1))
    os.replace(tmp, path)


class FileHashes:
    """SHA-256 of input files, remembered with their size and modification time.

    A rerun reads a file again only when its size or time changed, so resuming a cohort of
    thousands of volumes does not hash them all again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._known: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._known = {}

    def sha256(self, file: Path) -> str:
        """The file's SHA-256 (a folder: of its files' names and hashes). Raises ``OSError``
        when it cannot be read."""
        if file.is_dir():
            digest = hashlib.sha256()
            for member in sorted(p for p in file.rglob("*") if p.is_file()):
                digest.update(str(member.relative_to(file)).encode())
                digest.update(self.sha256(member).encode())
            return digest.hexdigest()
        stat = file.stat()
        known = self._known.get(str(file))
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        digest = file_sha256(file)
        self._known[str(file)] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        write_json_atomic(self.path, self._known)


def case_key(kind: str, file_hashes: dict[str, str], params: dict[str, Any]) -> str:
    """What makes a case's result: the job kind, its inputs' hashes and the parameters."""
    from napari_xaimed import __version__

    text = json.dumps(_plain({"kind": kind, "inputs": file_hashes, "params": params,
                              "version": __version__}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CohortStore:
    """Reads and writes the records of one output folder."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.cases_dir = self.out / "cases"
        self.outputs_dir = self.out / "outputs"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        self.hashes = FileHashes(self.out / "hashes.json")

    def record_path(self, case: Case) -> Path:
        return self.cases_dir / f"{case.stem}.json"

    def record(self, case: Case) -> dict[str, Any] | None:
        """The stored record of ``case``, or None (none yet, or unreadable)."""
        try:
            return json.loads(self.record_path(case).read_text())
        except (OSError, ValueError):
            return None

    def finished(self, case: Case, key: str) -> bool:
        """Whether ``case`` already succeeded with these inputs and parameters (and its output
        files are still there)."""
        record = self.record(case)
        if not record or record.get("status") != "ok" or record.get("key") != key:
            return False
        return all((self.out / f).is_file() for f in record.get("outputs", []))

    def write(self, case: Case, record: dict[str, Any]) -> None:
        write_json_atomic(self.record_path(case), {"case_id": case.case_id, **record})
