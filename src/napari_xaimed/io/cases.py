"""Case lists: a CSV with one row per case, its id, its input files and any other
columns (age, sex, scanner...) as the case's metadata."""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from napari_xaimed._core.errors import XaimedError

ID_COLUMN = "case_id"


@dataclass(frozen=True)
class Case:
    """One row of the case list.

    Attributes
    ----------
    case_id : str
    files : dict of str to pathlib.Path
        The input files by column (``reference``, ``prediction``, ``image``, ``mask``...),
        resolved against the CSV's folder when given relative.
    metadata : dict of str to str
        The row's other columns as text (an empty cell is ``""``).
    """

    case_id: str
    files: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """The case id as a file name (characters other than letters, digits, ``._-`` become
        ``_``)."""
        return case_file_stem(self.case_id)


def case_file_stem(case_id: str) -> str:
    """``case_id`` as the stem of its files: each character other than a word character, ``.``
    or ``-`` becomes ``_`` and leading dots go; case is kept (not
    :func:`napari_xaimed.cli._common.layer_file_stem`, the lower-case name of a written layer)."""
    return re.sub(r"[^\w.-]", "_", case_id).lstrip(".") or "_"


def file_key(case_id: str) -> str:
    """What a case id's files are called on a case-insensitive file system (macOS and Windows by
    default; macOS also compares names in one Unicode form): two ids with one key share files."""
    return unicodedata.normalize("NFC", case_file_stem(case_id)).casefold()


def _clash(case_id: str, other: str) -> str:
    """Why ``case_id`` cannot sit beside ``other`` (ids with the same :func:`file_key`)."""
    if case_id == other:
        return f"case id {case_id!r} is listed twice"
    if case_file_stem(case_id) == case_file_stem(other):
        return f"case id {case_id!r} gives the same file name as {other!r}"
    return (f"case ids {other!r} and {case_id!r} differ only in letter case (or Unicode "
            "form): on a case-insensitive file system (macOS, Windows) they would share output "
            "files; rename one")


def check_case_ids(cases: list[Case]) -> None:
    """Refuse cases whose ids would share output files.

    Raises
    ------
    XaimedError
        Two ids that are equal, give the same file name, or differ only in letter case.
    """
    seen: dict[str, str] = {}
    for case in cases:
        key = file_key(case.case_id)
        if key in seen:
            raise XaimedError(_clash(case.case_id, seen[key]) + ": case ids must be unique.")
        seen[key] = case.case_id


def read_cases(path: str | Path, required: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> list[Case]:
    """Read a case list.

    Parameters
    ----------
    path : str or pathlib.Path
        CSV with a header row: ``case_id`` and the file columns. Relative file paths are taken
        from the CSV's own folder, so a cohort folder can move as a whole. Empty optional cells
        mean "no such file for this case".
    required : tuple of str
        File columns every case needs (``("reference", "prediction")``).
    optional : tuple of str
        File columns that may be missing or empty (``("mask",)``).

    Returns
    -------
    list of Case
        In the file's order.

    Raises
    ------
    XaimedError
        A missing file or column, an empty or duplicated case id, or ids that become the same
        file name (letter case ignored, as macOS and Windows do). A case whose input file does not
        exist is *not* an error here: it fails on its own in the run, and the others go on.
    """
    path = Path(path)
    if not path.is_file():
        raise XaimedError(f"No case list at {str(path)!r}: check the path.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in (ID_COLUMN, *required) if c not in header]
        if missing:
            raise XaimedError(
                f"{path.name} lacks the column(s) {missing}: its header must name "
                f"{', '.join((ID_COLUMN, *required))}"
                + (f" (and optionally {', '.join(optional)})" if optional else "") + f"; it has "
                f"{header}.")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case_id = row.get(ID_COLUMN, "")
        if not case_id:
            raise XaimedError(f"{path.name} line {line}: the case_id is empty.")
        key = file_key(case_id)
        if key in seen:
            raise XaimedError(f"{path.name} line {line}: {_clash(case_id, seen[key])}: case ids "
                              "must be unique.")
        seen[key] = case_id
        files = {}
        for column in (*required, *optional):
            value = row.get(column, "")
            if not value:
                if column in required:
                    raise XaimedError(f"{path.name} line {line} (case {case_id!r}): the "
                                      f"{column} path is empty.")
                continue
            file = Path(value).expanduser()
            files[column] = file if file.is_absolute() else (path.parent / file).resolve()
        inputs = (ID_COLUMN, *required, *optional)
        others = {k: v for k, v in row.items() if k and k not in inputs}
        cases.append(Case(case_id, files, others))
    if not cases:
        raise XaimedError(f"{path.name} lists no cases.")
    return cases


def case_metadata(cases: list[Case], columns: list[str] | tuple[str, ...] | None = None):
    """The cases' metadata as a table indexed by ``case_id``.

    Parameters
    ----------
    cases : list of Case
    columns : sequence of str, optional
        Columns to keep (default: all). Numeric columns become numbers; the others stay text.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    XaimedError
        A named column the case list does not have (the message lists those it has).
    """
    import pandas as pd

    have = list(dict.fromkeys(k for case in cases for k in case.metadata))
    wanted = have if columns is None else list(columns)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise XaimedError(f"the case list has no column(s) {missing}: add them to the CSV "
                          f"(one value per case) or pick from its metadata columns {have}.")
    table = pd.DataFrame([{c: case.metadata.get(c, "") for c in wanted} for case in cases],
                         index=pd.Index([case.case_id for case in cases], name=ID_COLUMN),
                         columns=wanted)
    for column in wanted:
        numeric = pd.to_numeric(table[column], errors="coerce")
        if numeric.notna().all():
            table[column] = numeric
    return table
