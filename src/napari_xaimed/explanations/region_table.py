"""The pieces of the relevance-by-region table that the in-memory summary (:mod:`.regions`)
and the slab-by-slab one (:mod:`.truth_lazy`) share: the input checks and the table itself."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError

#: The columns of :func:`relevance_by_region`'s table, in order.
REGION_COLUMNS = ("label", "name", "voxels", "volume_mm3", "sum", "mean", "positive_share",
                  "enrichment", "rank")


def _check_heat_type(shape: tuple[int, ...], dtype: np.dtype, name: str = "heatmap") -> None:
    if len(shape) != 3:
        raise XaimedError(f"the {name} must be 3D (z, y, x), got shape {shape}.")
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise XaimedError(f"the {name} must hold real numbers, got {dtype}.")


def _check_finite(finite: bool, name: str = "heatmap") -> None:
    if not finite:
        raise XaimedError(f"the {name} holds NaN or infinite values: recompute it, or replace "
                          "them (np.nan_to_num) if they mark 'no relevance'.")


def _check_labels_shape(shape: tuple[int, ...], heat_shape: tuple[int, ...]) -> None:
    if shape != heat_shape:
        raise XaimedError(f"the regions {shape} and the heatmap {heat_shape} differ in shape: "
                          "resample the atlas onto the heatmap's grid (nearest neighbour), "
                          "e.g. with registration's apply_transform.")


def _labels_whole(lab: np.ndarray) -> bool:
    """Whether labels of a float dtype hold whole finite numbers only (ints and bools do)."""
    if np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool:
        return True
    return bool(np.all(np.isfinite(lab)) and not np.any(lab != np.round(lab)))


def _check_whole(whole: bool, dtype: np.dtype) -> None:
    if not whole:
        raise XaimedError(f"the regions must be integer labels, got {dtype} values "
                          "that are not whole numbers: pass a Labels layer.")


def _check_label_range(lowest: float, any_region: bool) -> None:
    if lowest < 0:
        raise XaimedError("the regions hold negative labels: 0 is background, regions are "
                          "1, 2, ...")
    if not any_region:
        raise XaimedError("the regions are empty (all 0): draw or pick an atlas with regions.")


def _region_table(ids: np.ndarray, counts: np.ndarray, sums: np.ndarray, positive: np.ndarray,
                  total_positive: float, size: int, voxel_mm3: float,
                  names: Mapping[int, str] | None) -> pd.DataFrame:
    """The table of :func:`relevance_by_region` from its per-region voxel counts and sums
    (summed and positive relevance), the volume's positive relevance and voxel count."""
    share = positive / total_positive if total_positive > 0 else np.zeros_like(positive)
    voxel_share = counts / size
    table = pd.DataFrame({
        "label": ids.astype(np.int64),
        "name": [(names or {}).get(int(i), str(int(i))) for i in ids],
        "voxels": counts.astype(np.int64),
        "volume_mm3": counts * voxel_mm3,
        "sum": sums,
        "mean": sums / counts,
        "positive_share": share,
        "enrichment": share / voxel_share,
        "rank": pd.Series(sums).rank(ascending=False, method="min").astype(np.int64).to_numpy(),
    }, columns=list(REGION_COLUMNS))
    return table.sort_values(["rank", "label"], kind="stable").reset_index(drop=True)
