"""Part-aware scores: parts compared inside the things they belong to.

A class with parts is given as ``{"thing": [values], "parts": {"core": [values], ...}}`` over a
semantic map. Things are the connected components of all thing values and are matched on their
whole extent; a matched pair's part is then the part's voxels *inside that pair's things*, so a
part is never credited to a neighbouring thing, and the result does not depend on which raw
label values were chosen (Panoptica hard-codes the thing channel as 1 and pools parts across
things, which this avoids).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.evaluation.overlap import pair_score


def check_parts(parts: Any) -> dict[str, dict[str, Any]]:
    """Validate ``{"class": {"thing": [...], "parts": {"name": [...]}}}``."""
    if not isinstance(parts, dict) or not parts:
        raise XaimedError('parts must look like {"tumor": {"thing": [1, 2, 3], "parts": '
                          '{"core": [2], "necrosis": [3]}}}.')
    out = {}
    for name, spec in parts.items():
        if not isinstance(spec, dict) or "thing" not in spec or "parts" not in spec:
            raise XaimedError(f'parts[{name!r}] needs "thing" (label values) and "parts" '
                              '(name -> label values).')
        thing = [int(v) for v in spec["thing"]]
        sub = {str(k): [int(v) for v in (vals if isinstance(vals, list | tuple) else [vals])]
               for k, vals in spec["parts"].items()}
        for part, vals in sub.items():
            if not set(vals) <= set(thing):
                raise XaimedError(f"part {part!r} of {name!r} uses values {vals} that are not "
                                  f"among the thing's values {thing}: add them to the thing.")
        out[str(name)] = {"thing": thing, "parts": sub}
    return out


def part_scores(box: tuple[slice, ...], ref_thing: np.ndarray, pred_thing: np.ndarray,
                reference: np.ndarray, prediction: np.ndarray, parts: dict[str, list[int]],
                metric: str) -> dict[str, float]:
    """The matching metric of each part inside one matched pair of things (NaN when the part
    is absent from both)."""
    ref_values, pred_values = reference[box], prediction[box]
    scores = {}
    for name, values in parts.items():
        r = ref_thing & np.isin(ref_values, values)
        p = pred_thing & np.isin(pred_values, values)
        nr, np_, inter = int(r.sum()), int(p.sum()), int((r & p).sum())
        scores[name] = math.nan if nr + np_ == 0 else float(pair_score(inter, nr, np_, metric))
    return scores


def combined_score(thing_score: float, scores: dict[str, float]) -> float:
    """Mean of the thing's score and the scores of the parts present in the pair."""
    present = [s for s in scores.values() if not math.isnan(s)]
    return float(np.mean([thing_score, *present]))
