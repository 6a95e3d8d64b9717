"""Concepts from a cohort's case list: TCAV from a concept column, RCV from measures (radiomics
features of each case's image and mask, or columns of the list)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.concepts.directional import (
    TCAVResult,
    tcav,
)
from napari_xaimed.concepts.rcv import RCVResult, regression_concepts


@dataclass(frozen=True)
class CaseConcepts:
    """Concept explanations of a case list (:func:`concepts_from_cases`).

    Attributes
    ----------
    tcav : TCAVResult or None
        With a concept column: each named concept against the cases without one.
    rcv : RCVResult or None
        With measures: the regression concept vectors of each measure.
    features : pandas.DataFrame
        Per case (indexed by ``case_id``), the measures used.
    """

    tcav: TCAVResult | None
    rcv: RCVResult | None
    features: pd.DataFrame

    def to_dataframe(self) -> pd.DataFrame:
        """Both results in one table, a ``kind`` column saying which."""
        parts = [r.to_dataframe().assign(kind=kind) for kind, r in
                 (("tcav", self.tcav), ("rcv", self.rcv)) if r is not None]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def concepts_from_cases(model: Any, case_list: Any, *, concept_column: str | None = None,
                        measures: Sequence[str] | None = None, image: str = "image",
                        mask: str = "mask", layer: str | None = None,
                        target: int | None = None, runs: int = 5,
                        permutations: int = 50, preprocessing: Any = None,
                        device: str = "auto", seed: int = 0) -> CaseConcepts:
    """TCAV and regression concept vectors from a cohort's case list.

    Parameters
    ----------
    model : torch.nn.Module, path or LoadedModel
        A classifier.
    case_list : str or pathlib.Path
        The cohort CSV: ``case_id``, the ``image`` column, optionally a ``mask`` column (the
        region the radiomics measures describe) and metadata columns.
    concept_column : str, optional
        A column naming each case's concept ("spiculated", "rim"...); every case whose cell
        is empty joins the random pool. TCAV explains the decisions on every case.
    measures : sequence of str, optional
        Continuous measures for the RCVs: radiomics :data:`~napari_xaimed.attribution.
        radiomics.FEATURES` of each case's mask (``volume_mm3``, ``sphericity``...) and/or
        numeric metadata columns (``age``).
    image, mask : str
        The file columns.
    layer : str, optional
        Default: the last spatial feature map.
    target, runs, permutations, preprocessing, device, seed
        As :func:`tcav` and :func:`regression_concepts`.

    Returns
    -------
    CaseConcepts
    """
    from napari_xaimed.concepts.radiomics import FEATURES, case_features
    from napari_xaimed.io import read_volume
    from napari_xaimed.io.cases import case_metadata, read_cases

    if not concept_column and not measures:
        raise XaimedError("name a concept column (TCAV) or measures (regression concept "
                          "vectors), or both.")
    cases = read_cases(case_list, (image,), (mask,))
    wanted = [concept_column] if concept_column else []
    wanted += [m for m in measures or [] if m not in FEATURES]
    metadata = case_metadata(cases, wanted)  # a missing column says which ones there are
    radiomic = [m for m in measures or [] if m in FEATURES]
    if radiomic:  # the images and each case's mask features, as case_features reads them
        volumes, table = case_features(case_list, image=image, mask=mask)
        features = table[radiomic].copy()
    else:
        volumes = [np.asarray(read_volume(c.files[image]).data, np.float32) for c in cases]
        features = pd.DataFrame(index=metadata.index)
    for m in measures or []:
        if m not in FEATURES:
            features[m] = metadata[m]
    concept_result = None
    if concept_column:
        labels = metadata[concept_column].astype(str).str.strip()
        names = sorted(n for n in set(labels) if n)
        if not names:
            raise XaimedError(f"column {concept_column!r} names no concept: write a concept's "
                              "name in the cells of its example cases.")
        sets = {n: [volumes[i] for i in np.flatnonzero(labels.to_numpy() == n)]
                for n in names}
        pool = [volumes[i] for i in np.flatnonzero(labels.to_numpy() == "")]
        concept_result = tcav(model, volumes, sets, random_pool=pool, target=target,
                              layers=[layer] if layer else None,
                              runs=runs, preprocessing=preprocessing, device=device, seed=seed)
    rcv = None
    if measures:
        rcv = regression_concepts(model, volumes, features[list(measures)], layer=layer,
                                  target=target,
                                  permutations=permutations, preprocessing=preprocessing,
                                  device=device, seed=seed)
    return CaseConcepts(concept_result, rcv, features)
