"""Matching instances: a bipartite assignment with a bounded degree on each side.

Candidates are the overlapping pairs whose score (IoU or Dice) reaches the threshold. Each strategy
bounds how many partners a segment may take:

- ``one_to_one``: one on each side; ``assignment="greedy"`` takes pairs by descending score,
  ``"optimal"`` maximises the total score (``scipy.optimize.linear_sum_assignment`` on each
  connected block of the candidate graph);
- ``many_to_one``: a reference may take several predictions (a split), a prediction one reference;
- ``one_to_many``: a prediction may take several references (a merge), a reference one prediction.

Greedy ties are broken by (reference, prediction) number, so results do not depend on hash order.
The segments matched together form a *group*, evaluated as one merged segment on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.evaluation.overlap import OverlapTable, score_value

MATCHINGS = ("one_to_one", "many_to_one", "one_to_many")
ASSIGNMENTS = ("greedy", "optimal")


@dataclass(frozen=True)
class Group:
    """Segments matched together (compact numbers) and the merged pair's counts and score."""

    refs: tuple[int, ...]
    preds: tuple[int, ...]
    inter: int
    ref_size: int
    pred_size: int
    score: float


def check_matching(matching: str, assignment: str) -> None:
    if matching == "many_to_many":
        raise XaimedError(
            "many_to_many matching is outside panoptic quality: a segment matched on both sides "
            "several times has no single TP/FP/FN count. Use one_to_one, many_to_one or one_to_many."
        )
    if matching not in MATCHINGS:
        raise XaimedError(f"matching must be one of {', '.join(MATCHINGS)}, got {matching!r}.")
    if assignment not in ASSIGNMENTS:
        raise XaimedError(f"assignment must be 'greedy' or 'optimal', got {assignment!r}.")
    if assignment == "optimal" and matching != "one_to_one":
        raise XaimedError("assignment='optimal' applies to one_to_one matching only.")


def eligible(scores: np.ndarray, threshold: float, strict: bool) -> np.ndarray:
    return scores > threshold if strict else scores >= threshold


def match_edges(
    table: OverlapTable,
    scores: np.ndarray,
    threshold: float,
    matching: str = "one_to_one",
    assignment: str = "greedy",
    strict: bool = False,
) -> list[tuple[int, int]]:
    """The matched (reference, prediction) pairs, as compact numbers."""
    ok = np.flatnonzero(eligible(scores, threshold, strict))
    if ok.size == 0:
        return []
    refs, preds, s = table.pair_ref[ok], table.pair_pred[ok], scores[ok]
    if assignment == "optimal":
        return _optimal(refs, preds, s)
    order = np.lexsort((preds, refs, -s))
    ref_cap = 1 if matching in ("one_to_one", "one_to_many") else None
    pred_cap = 1 if matching in ("one_to_one", "many_to_one") else None
    ref_used: set[int] = set()
    pred_used: set[int] = set()
    edges = []
    for r, p in zip(refs[order].tolist(), preds[order].tolist(), strict=True):
        if (ref_cap and r in ref_used) or (pred_cap and p in pred_used):
            continue
        ref_used.add(r)
        pred_used.add(p)
        edges.append((r, p))
    return edges


def _optimal(refs: np.ndarray, preds: np.ndarray, scores: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-total-score one-to-one matching, solved per connected block of candidates."""
    ref_ids, ref_idx = np.unique(refs, return_inverse=True)
    pred_ids, pred_idx = np.unique(preds, return_inverse=True)
    n_r, n_p = len(ref_ids), len(pred_ids)
    graph = coo_matrix((np.ones(len(refs)), (ref_idx, n_r + pred_idx)), shape=(n_r + n_p,) * 2)
    _, component = connected_components(graph, directed=False)
    edges = []
    pair_component = component[ref_idx]
    for c in np.unique(pair_component):
        sel = np.flatnonzero(pair_component == c)
        if sel.size == 1:
            edges.append((int(refs[sel[0]]), int(preds[sel[0]])))
            continue
        rows, r_local = np.unique(ref_idx[sel], return_inverse=True)
        cols, p_local = np.unique(pred_idx[sel], return_inverse=True)
        # A tiny bonus per matched pair prefers more matches among equal totals, as
        # Panoptica's cost formulation does.
        weights = np.zeros((len(rows), len(cols)))
        weights[r_local, p_local] = scores[sel] + 1e-6
        assigned_r, assigned_p = linear_sum_assignment(weights, maximize=True)
        for i, j in zip(assigned_r, assigned_p, strict=True):
            if weights[i, j] > 0:
                edges.append((int(ref_ids[rows[i]]), int(pred_ids[cols[j]])))
    return sorted(edges)


def group_edges(
    edges: list[tuple[int, int]], table: OverlapTable, inter_of: dict[tuple[int, int], int],
    metric: str, matching: str,
) -> list[Group]:
    """Gather matched pairs into groups (merged segments) and score each group."""
    by_key: dict[int, list[tuple[int, int]]] = {}
    for r, p in edges:
        key = p if matching == "one_to_many" else r
        by_key.setdefault(key, []).append((r, p))
    groups = []
    ref_sizes, pred_sizes = table.ref_sizes.tolist(), table.pred_sizes.tolist()
    for members in by_key.values():
        refs = tuple(sorted({r for r, _ in members}))
        preds = tuple(sorted({p for _, p in members}))
        inter = sum(inter_of.get((r, p), 0) for r in refs for p in preds)
        ref_size = sum(ref_sizes[r] for r in refs)
        pred_size = sum(pred_sizes[p] for p in preds)
        score = score_value(inter, ref_size, pred_size, metric)
        groups.append(Group(refs, preds, inter, ref_size, pred_size, score))
    groups.sort(key=lambda g: g.refs)
    return groups


@dataclass(frozen=True)
class Counts:
    """Vertex-based counts of one matching."""

    tp: int
    fp: int
    fn: int
    accepted: tuple[Group, ...]
    rejected: tuple[Group, ...]

    @property
    def rq(self) -> float:
        if self.tp + self.fp + self.fn == 0:
            return float("nan")
        return self.tp / (self.tp + 0.5 * self.fp + 0.5 * self.fn)

    @property
    def sq(self) -> float:
        if self.tp + self.fp + self.fn == 0:
            return float("nan")
        if self.tp == 0:
            return 0.0
        return float(np.mean([g.score for g in self.accepted for _ in g.refs]))

    @property
    def pq(self) -> float:
        return self.sq * self.rq


def count(groups: list[Group], n_ref: int, n_pred: int, threshold: float, strict: bool,
          matching: str) -> Counts:
    """TP/FP/FN anchored to segments: TP = matched references, FN = the other references,
    FP = prediction segments (merged fragments count once) not in an accepted group.

    A group whose merged score falls below the threshold is not accepted (as Panoptica decides).
    """
    ok = eligible(np.array([g.score for g in groups], dtype=float), threshold, strict)
    accepted = tuple(g for g, keep in zip(groups, ok, strict=True) if keep)
    rejected = tuple(g for g, keep in zip(groups, ok, strict=True) if not keep)
    tp = sum(len(g.refs) for g in accepted)
    merged_away = sum(len(g.preds) - 1 for g in groups) if matching == "many_to_one" else 0
    pred_segments = n_pred - merged_away
    fp = pred_segments - len(accepted)
    fn = n_ref - tp
    return Counts(tp=tp, fp=fp, fn=fn, accepted=accepted, rejected=rejected)
