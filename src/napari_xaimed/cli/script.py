"""Save an output as a Python script: ``napari-xaimed script PROVENANCE.json``.

The script makes the same public calls as ``napari-xaimed rerun`` (both run the
:func:`~napari_xaimed.cli.recompute.recipe` of the provenance): it reads the recorded inputs
(each checked against its SHA-256, or another file given as an argument), computes the output
and writes it as NIfTI with its provenance beside it. It imports napari-xaimed's public
functions only, so it is a starting point for a batch script.
"""

from __future__ import annotations

import argparse
import ast
import json
import pprint
from pathlib import Path
from typing import Any

from napari_xaimed.cli.recipe import imports, render
from napari_xaimed.cli.recompute import recipe
from napari_xaimed.cli.rerun_inputs import input_records

_HEADER = '''#!/usr/bin/env python
"""Compute {what} again: {kind} output of napari-xaimed {version}, saved as a script.

Each input defaults to the recorded file (or the file of that name beside this script, or
the sample it was generated as), checked against its recorded SHA-256; give another file to
run the same computation on it (its own spacing and origin, nothing checked). The output is
written as NIfTI with its provenance in a JSON file beside it.

    python {script} [--out OUTPUT.nii.gz]{options}
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

{imports}
HERE = Path(__file__).resolve().parent

#: The provenance of the output, as recorded (its inputs, parameters and model).
PROVENANCE = {provenance}

#: Where each input comes from, by role (PROVENANCE's inputs, found again).
INPUTS = {inputs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
{arguments}    parser.add_argument("--out", type=Path,
                        default=HERE / "recomputed" / {out!r},
                        help="the NIfTI file to write (default: %(default)s)")
    args = parser.parse_args(argv)
{reads}
{calls}
    write_volume(args.out, np.asarray(output),
                 affine=affine_from_grid({grid}.spacing, {grid}.origin or (0.0, 0.0, 0.0),
                                         template={grid}.affine),
                 is_label={is_label}, metadata={{**PROVENANCE, "script": __file__}})
    print(f"wrote {{args.out}}")


if __name__ == "__main__":
    main()
'''


def _python(value: Any) -> str:
    """A JSON value as Python source: a literal where it reads back equal, else ``json.loads``."""
    text = pprint.pformat(value, width=96, sort_dicts=False)
    try:
        if ast.literal_eval(text) == value:
            return text
    except (ValueError, SyntaxError):
        pass
    return f"json.loads({json.dumps(value)!r})"


def script_text(prov: dict[str, Any], name: str = "output", *, base: Path | None = None,
                trust: bool = False) -> str:
    """The Python script that computes the output a provenance dict describes.

    Parameters
    ----------
    prov : dict
        An output's ``metadata["xaimed"]`` or its JSON sidecar.
    name : str
        The output's name (its file name for a CLI registration's outputs); the script's
        default output is ``recomputed/<name>.nii.gz`` beside it.
    base : pathlib.Path, optional
        The folder of the provenance file, where inputs of older records are looked for.
    trust : bool
        Let the script run the code the model file names (``load_model(..., trust=True)``).

    Returns
    -------
    str
        The script's source.

    Raises
    ------
    XaimedError
        If the output cannot be computed from its provenance (the message says why), or an
        input of an older record is not found.
    """
    from napari_xaimed import __version__
    from napari_xaimed.cli._common import layer_file_stem

    plan = recipe(prov, name, trust)
    records = input_records(prov, base) if prov.get("kind") != "registration-apply" else {
        **(prov.get("inputs") or {}), **input_records(prov["registration"], base)}
    records = {role: records[role] for role in plan.roles}
    needed = {"napari_xaimed.cli.rerun_inputs": ["resolve_input"],
              "napari_xaimed.io": ["affine_from_grid", "write_volume"]}
    for module, names in imports(plan).items():
        needed.setdefault(module, []).extend(n for n in names if n not in needed[module])
    import_lines = "".join(f"from {m} import {', '.join(sorted(n))}\n"
                           for m, n in sorted(needed.items()))
    if "json.loads" in _python(prov) + _python(records):
        import_lines = "import json\n\n" + import_lines
    arguments, reads, options = [], [], []
    for role, record in records.items():
        if "points_world_mm" in record:  # recorded points: no file to give
            reads.append(f"    {role} = resolve_input({role!r}, INPUTS[{role!r}], HERE)")
            continue
        option = "--" + role.replace("_", "-")
        where = record.get("path") or (f"sample {record['sample']['params']}"
                                       if record.get("sample") else record.get("name"))
        arguments.append(f"    parser.add_argument({option!r}, type=Path, default=None,\n"
                         f"                        help={f'default: {where}'!r})\n")
        reads.append(f"    {role} = resolve_input({role!r}, INPUTS[{role!r}], HERE, "
                     f"path=args.{role})")
        options.append(f" [{option} FILE]")
    stem = layer_file_stem(Path(name).name.split(".nii")[0]) if name else "output"
    text = _HEADER.format(
        what=repr(name), kind=f"the {prov.get('kind')}", version=__version__,
        script=f"{stem}.py", options="".join(options), imports=import_lines,
        provenance=_python(prov), inputs=_python(records), arguments="".join(arguments),
        out=f"{stem}.nii.gz", reads="\n".join(reads), calls="\n".join(render(plan)),
        grid=plan.grid, is_label=plan.is_label)
    compile(text, f"{stem}.py", "exec")  # a broken script fails here, not in the user's hands
    return text


def write_script(path: str | Path, out: str | Path | None = None, trust: bool = False) -> Path:
    """Write the script of the output whose provenance (JSON sidecar) is ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        The output's JSON sidecar, or the output NIfTI (its sidecar beside it).
    out : path, optional
        The script file; default ``<output stem>.py`` beside the sidecar.
    trust : bool
        See :func:`script_text`.

    Returns
    -------
    pathlib.Path
        The script written.
    """
    from napari_xaimed.cli.rerun import read_provenance

    side, _, prov = read_provenance(path)
    target = Path(out) if out is not None else side.with_suffix(".py")
    text = script_text(prov, side.stem, base=side.parent.resolve(), trust=trust)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def run_script(args: argparse.Namespace) -> int:
    """The ``script`` command."""
    written = write_script(args.provenance, args.out, args.trust)
    print(f"napari-xaimed script: wrote {written}; run it with: python {written}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``script`` subcommand of ``napari-xaimed``."""
    parser = sub.add_parser(
        "script", help="write a Python script that computes an output again from its JSON "
        "provenance, with the public API")
    parser.add_argument("provenance", type=Path,
                        help="the output's .json sidecar (or the output .nii/.nii.gz)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the script file (default: <output>.py beside the provenance)")
    from napari_xaimed.cli._common import TRUST_HELP

    parser.add_argument("--trust", action="store_true", help=TRUST_HELP)
