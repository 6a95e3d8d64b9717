"""A cohort's latent space: one embedding per case on Dask, then the projection, the cases'
metadata beside it, and how much of each named metadata column the space holds along the
model's decision (:func:`napari_xaimed.attribution.confounder_scores`).

Each worker embeds its cases (:func:`napari_xaimed.attribution.case_embedding`) and sends the
vectors back as a small ``embedding.npz`` under ``outputs/<case>/``; the client puts them
together once every case is in (:func:`summarise_latent`), writing ``embeddings.npz``,
``latent.csv`` (one row per case: projection coordinates, predicted class, metadata) and
``confounders.csv``.
"""

from __future__ import annotations

import io
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cohort.jobs import (
    CaseOutcome,
    OutputFiles,
    _read_3d,
    cached_model,
    describe_failure,
)
from napari_xaimed.io.cases import Case, case_metadata

EMBEDDING_FILE = "embedding.npz"
PROJECTIONS = ("pca", "umap")


@dataclass
class EmbeddingJob:
    """Embed each case's image at one layer of a classifier.

    Parameters
    ----------
    model : str
        A model file or folder, or ``"bundled"``; every worker must be able to read it.
    layer : str, optional
        Default: the last spatial feature map (as Grad-CAM's).
    target : int, optional
        The class whose decision direction is used; default: the class most cases are
        predicted as.
    params : dict
        ``preprocessing`` and ``device`` (as :func:`napari_xaimed.attribution.case_embedding`).
    confounders : list of str
        Metadata columns of the case list (age, sex, scanner...) to score on the latent space.
    projection : {"pca", "umap"}
        Of the scatter coordinates in ``latent.csv`` (UMAP needs ``umap-learn``).
    trust : bool
        Run the code the model file names (see :func:`napari_xaimed.attribution.load_model`).
    """

    model: str = "bundled"
    layer: str | None = None
    target: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    confounders: list[str] = field(default_factory=list)
    projection: str = "pca"
    trust: bool = False
    model_sha256: str = ""
    model_config_sha256: str | None = None
    networks: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = "embedding"
    required: tuple[str, ...] = ("image",)
    optional: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse unknown parameters and an unreadable model before any case runs."""
        from napari_xaimed.attribution import load_model

        unknown = set(self.params) - {"preprocessing", "device"}
        if unknown:
            raise XaimedError(f"unknown embedding parameter(s) {sorted(unknown)}: give "
                              "preprocessing or device.")
        if self.projection not in PROJECTIONS:
            raise XaimedError(f"unknown projection {self.projection!r}: choose 'pca' or "
                              "'umap'.")
        if self.target is not None and int(self.target) < 0:
            raise XaimedError(f"target must be a class index (0 or more), got {self.target}.")
        from napari_xaimed.models.trust import registered_networks

        loaded = load_model(self.model, trust=self.trust)
        self.model_sha256, self.model_config_sha256 = loaded.sha256, loaded.config_sha256
        self.networks = registered_networks()

    def check_cases(self, cases: list[Case]) -> None:
        """Refuse confounder columns the case list does not have, before any case runs."""
        if self.confounders:
            case_metadata(cases, self.confounders)

    def key_params(self) -> dict[str, Any]:
        # the projection and confounders are computed on the client from the stored
        # embeddings: changing them recomputes nothing per case
        return {"model_sha256": self.model_sha256,
                "model_config_sha256": self.model_config_sha256, "layer": self.layer,
                "target": self.target,
                "params": self.params}

    def run(self, case: Case) -> CaseOutcome:
        """Embed one case; never raises."""
        from napari_xaimed.latent.embedding import case_embedding

        start = time.perf_counter()
        try:
            image = _read_3d(case.files["image"], "image")
            model = cached_model(self.model, f"{self.model_sha256}+{self.model_config_sha256}",
                                 trust=self.trust, networks=self.networks)
            emb = case_embedding(model, image.data, layer=self.layer, target=self.target,
                                 **self.params)
        except Exception as exc:
            return CaseOutcome.failed(describe_failure(exc), time.perf_counter() - start)
        row: dict[str, Any] = {"layer": emb.layer, "predicted": emb.predicted,
                               "channels": int(emb.vector.size)}
        row.update({f"score_{k}": float(s) for k, s in enumerate(emb.scores)})
        return CaseOutcome(status="ok", rows=[row],
                           outputs=[OutputFiles(case.stem, {EMBEDDING_FILE: _encode(emb)})],
                           seconds=time.perf_counter() - start, worker=socket.gethostname())


def _encode(emb: Any) -> bytes:
    classes = sorted(emb.gradients)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, vector=emb.vector, scores=emb.scores,
                        classes=np.asarray(classes, np.int64),
                        gradients=np.stack([emb.gradients[c] for c in classes]),
                        layer=np.asarray(emb.layer))
    return buffer.getvalue()


def _decode(path: Path) -> Any:
    from napari_xaimed.latent.embedding import CaseEmbedding

    with np.load(path) as data:
        gradients = {int(c): g for c, g in zip(data["classes"], data["gradients"], strict=True)}
        return CaseEmbedding(data["vector"], gradients, data["scores"], str(data["layer"]))


def summarise_latent(job: EmbeddingJob, cases: list[Case], records: dict[str, dict],
                     out: Path) -> tuple[Any, Any]:
    """Assemble the finished cases' embeddings and write the latent-space tables.

    Parameters
    ----------
    job : EmbeddingJob
    cases : list of Case
    records : dict
        Each case's stored record, by case id.
    out : pathlib.Path
        The run's folder.

    Returns
    -------
    (latent, confounders) : pandas.DataFrame, pandas.DataFrame or None
        ``latent``: per embedded case, ``case_id``, projection coordinates (``pca_1``,
        ``pca_2`` or ``umap_1``, ``umap_2``), ``predicted`` and the metadata columns.
        None when fewer than two cases were embedded (nothing to project).
    """
    import pandas as pd

    from napari_xaimed.latent.embedding import assemble, confounder_scores, project

    done = [c for c in cases if records[c.case_id].get("status") == "ok"]
    for stale in ("latent.csv", "confounders.csv", "embeddings.npz"):
        (out / stale).unlink(missing_ok=True)
    if len(done) < 2:
        return None, None
    embeddings = assemble([c.case_id for c in done],
                          [_decode(out / "outputs" / c.stem / EMBEDDING_FILE) for c in done],
                          target=job.target)
    save_embeddings(out / "embeddings.npz", embeddings)
    coords = project(embeddings, job.projection, dimensions=min(2, embeddings.vectors.shape[1]))
    latent = pd.DataFrame({"case_id": embeddings.ids})
    for k in range(coords.shape[1]):
        latent[f"{job.projection}_{k + 1}"] = coords[:, k]
    latent["predicted"] = embeddings.predicted
    metadata = case_metadata(done)
    for column in metadata.columns:
        latent[column] = metadata[column].to_numpy()
    latent.to_csv(out / "latent.csv", index=False)
    confounders = None
    if job.confounders:
        confounders = confounder_scores(embeddings, case_metadata(done, job.confounders),
                                        job.confounders)
        confounders.to_csv(out / "confounders.csv", index=False)
    return latent, confounders


def save_embeddings(path: Path, embeddings: Any) -> None:
    """Write :class:`~napari_xaimed.latent.embedding.Embeddings` as one ``.npz``."""
    np.savez_compressed(path, vectors=embeddings.vectors, decision=embeddings.decision,
                        predicted=embeddings.predicted,
                        meta=np.asarray(json.dumps({"layer": embeddings.layer,
                                                    "target": embeddings.target,
                                                    "ids": embeddings.ids})))


def load_embeddings(out: str | Path) -> Any:
    """The :class:`~napari_xaimed.latent.embedding.Embeddings` an embedding run left in
    ``out`` (its folder or the ``embeddings.npz`` itself)."""
    from napari_xaimed.latent.embedding import Embeddings

    path = Path(out)
    path = path / "embeddings.npz" if path.is_dir() else path
    if not path.is_file():
        raise XaimedError(f"{str(path)!r} does not exist: run an embedding cohort "
                          "(napari-xaimed embed --cohort ...) into that folder first.")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return Embeddings(data["vectors"], data["decision"], meta["layer"], int(meta["target"]),
                          list(meta["ids"]), data["predicted"])
