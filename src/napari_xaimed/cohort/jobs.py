"""What a cohort run does per case: evaluate a prediction, or explain a model's decision.

A job is a small picklable object; :meth:`run` executes on a Dask worker, reads the case's files,
computes, and returns a :class:`CaseOutcome` (rows for the tables, files to write). It never
raises for a bad case: the error becomes the case's record and the cohort goes on. Workers encode
their output files (the compression is the costly part, and it runs in parallel there) but the
client writes them, so workers need to read the inputs but not to reach the output folder.
"""

from __future__ import annotations

import math
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.cases import Case


@dataclass
class OutputFiles:
    """Encoded files the client writes under ``outputs/<folder>/``: a NIfTI and its JSON."""

    folder: str
    files: dict[str, bytes]

    @classmethod
    def volume(cls, folder: str, name: str, data: np.ndarray, spacing: Any, affine: Any,
               metadata: dict[str, Any]) -> OutputFiles:
        """``data`` as ``name`` (a ``.nii.gz``) with its JSON sidecar, as
        :func:`napari_xaimed.io.write_volume` writes them."""
        import tempfile

        from napari_xaimed.io import write_volume

        with tempfile.TemporaryDirectory(prefix="xaimed-cohort-") as tmp:
            written = write_volume(Path(tmp) / name, data, spacing, affine, metadata=metadata)
            return cls(folder, {path.name: path.read_bytes() for path in written})


@dataclass
class CaseOutcome:
    """One case's result as it travels back from the worker."""

    status: str  # "ok" or "error"
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[OutputFiles] = field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""

    @classmethod
    def failed(cls, message: str, seconds: float = 0.0) -> CaseOutcome:
        return cls(status="error", error=message, seconds=seconds, worker=socket.gethostname())


def describe_failure(exc: BaseException) -> str:
    """One line for the table: our own errors as they are, others with their type and place."""
    if isinstance(exc, XaimedError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)
    place = f" at {Path(where[-1].filename).name}:{where[-1].lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _read_3d(path: Path, what: str):
    from napari_xaimed._core.validate import as_volume
    from napari_xaimed.io import read_volume

    volume = read_volume(path)
    # shape and dtype here; evaluate and attribute refuse NaN themselves, no second pass
    as_volume(volume.data, f"the {what} {path.name}", allow_nan=True)
    return volume


def _same_grid(first: Any, second: Any, names: tuple[str, str]) -> None:
    """The package's one grid check on two files read as Volumes (their names in the
    message)."""
    from napari_xaimed.io.grid import check_same_grid

    check_same_grid(first, second, (f"the {names[0]} {first.path.name}",
                                    f"the {names[1]} {second.path.name}"))


@dataclass
class EvaluationJob:
    """Panoptic evaluation of each case's prediction against its reference.

    Parameters
    ----------
    params : dict
        Keyword arguments of :func:`napari_xaimed.evaluation.evaluate` shared by all cases
        (``matching``, ``threshold``, ``classes``, ``parts``...); the spacing comes from each
        reference file.
    """

    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "evaluation"
    required: tuple[str, ...] = ("reference", "prediction")
    optional: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse bad parameters before any case runs (on a tiny empty pair)."""
        from napari_xaimed.evaluation import evaluate

        if "spacing" in self.params or "keep_maps" in self.params:
            raise XaimedError("the spacing comes from each reference file: do not pass it.")
        empty = np.zeros((2, 2, 2), np.uint8)
        evaluate(empty, empty, **self.params)

    def key_params(self) -> dict[str, Any]:
        return dict(self.params)

    def run(self, case: Case) -> CaseOutcome:
        """Evaluate one case; never raises."""
        from napari_xaimed.evaluation import evaluate

        start = time.perf_counter()
        try:
            reference = _read_3d(case.files["reference"], "reference")
            prediction = _read_3d(case.files["prediction"], "prediction")
            _same_grid(reference, prediction, ("reference", "prediction"))
            result = evaluate(reference.data, prediction.data, spacing=reference.spacing,
                              **self.params)
        except Exception as exc:  # a bad case is a row of the table, not the end of the run
            return CaseOutcome.failed(describe_failure(exc), time.perf_counter() - start)
        # which label mode ran (each label value its own class, Panoptica's, merged...), on
        # every row, and the mean over classes where each value is its own class
        mode = result.params.get("label_mode")
        rows = [{**row, "label_mode": mode} for row in result.summary_rows()]
        instances = [_instance_row(r) for c in result.classes.values() for r in c.rows]
        return CaseOutcome(status="ok", rows=rows, instances=instances,
                           seconds=time.perf_counter() - start, worker=socket.gethostname())


def _instance_row(row: Any) -> dict[str, Any]:
    out = asdict(row)
    out["reference_ids"] = " ".join(map(str, row.reference_ids))
    out["prediction_ids"] = " ".join(map(str, row.prediction_ids))
    out.pop("center_zyx")
    out["center_z"], out["center_y"], out["center_x"] = row.center_zyx
    for part, value in out.pop("parts").items():
        out[f"part_{part}"] = value
    return out


# Each worker process loads a model once per file content, not once per case.
_MODELS: dict[str, Any] = {}


def cached_model(source: str, sha256: str, *, trust: bool = False,
                 networks: dict[str, Any] | None = None) -> Any:
    """The model ``source`` loaded once per worker process and file content (``sha256``: of
    the weights, and of the config after a ``+``, as the job's check found them); ``trust``
    and the ``networks`` registered where the job was made travel with the job, since a
    worker is another process. A file changed since the check is refused before anything is
    built from it: the code ``trust`` lets run is the code that was checked."""
    from napari_xaimed.attribution import load_model, register_network

    for name, cls in (networks or {}).items():
        register_network(name, cls)
    key = f"{source}:{sha256}:{trust}"
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        weights, _, config = sha256.partition("+")
        expect = {"sha256": weights or None,
                  "config_sha256": None if config in ("", "None") else config}
        _MODELS[key] = load_model(source, trust=trust, expect=expect)
    return _MODELS[key]


@dataclass
class AttributionJob:
    """Attribution maps of one model's decision on each case's image, and, when the case has a
    mask, how well each map finds it (:func:`napari_xaimed.attribution.truth_scores`).

    Parameters
    ----------
    model : str
        A model file or folder (see :func:`napari_xaimed.attribution.load_model`) or
        ``"bundled"``; every worker must be able to read it.
    methods : list of str
        From :data:`napari_xaimed.attribution.METHODS`; one heatmap per method and case.
    params : dict
        Keyword arguments of :func:`napari_xaimed.attribution.attribute` shared by all methods
        (``device``, ``seed``, ``target``, ``preprocessing``, ``batch_size``...).
    method_params : dict
        Per method, its own parameters (``{"occlusion": {"window": 8}}``).
    tolerance_mm, k : float
        Of the pointing game and top-k precision.
    trust : bool
        Run the code the model file names (see :func:`napari_xaimed.attribution.load_model`).
    margin_mm : float
        Width of the shell "around" each structure in the per-structure table.

    Notes
    -----
    The attribution job reads no prediction: with a mask, each of its structures (a connected
    component of one mask value) gets a row per method of
    :func:`~napari_xaimed.explanations.structures.relevance_by_structure` in the outcome's
    ``instances`` (the cohort's ``structures.csv``).
    """

    model: str = "bundled"
    methods: list[str] = field(default_factory=lambda: ["saliency"])
    params: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    tolerance_mm: float = 0.0
    k: float = 0.01
    trust: bool = False
    margin_mm: float = 5.0
    model_sha256: str = ""
    model_config_sha256: str | None = None
    networks: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = "attribution"
    required: tuple[str, ...] = ("image",)
    optional: tuple[str, ...] = ("mask",)

    def check(self) -> None:
        """Refuse unknown methods or parameters and an unreadable model before any case runs."""
        from napari_xaimed.attribution import METHODS, load_model
        from napari_xaimed.attribution.methods import check_params

        if not self.methods:
            raise XaimedError("name at least one attribution method.")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise XaimedError(f"unknown method(s) {unknown}: choose from {sorted(METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            raise XaimedError(f"a method is listed twice in {self.methods}.")
        for method in self.methods:
            check_params(method, self.method_params.get(method, {}))
        from napari_xaimed.models.trust import registered_networks

        loaded = load_model(self.model, trust=self.trust)
        self.model_sha256, self.model_config_sha256 = loaded.sha256, loaded.config_sha256
        self.networks = registered_networks()

    def key_params(self) -> dict[str, Any]:
        return {"model_sha256": self.model_sha256,
                "model_config_sha256": self.model_config_sha256,
                "methods": self.methods, "params": self.params,
                "method_params": self.method_params, "tolerance_mm": self.tolerance_mm,
                "k": self.k, "margin_mm": self.margin_mm}

    def _model(self) -> Any:
        return cached_model(self.model, f"{self.model_sha256}+{self.model_config_sha256}",
                            trust=self.trust,
                            networks=self.networks)

    def run(self, case: Case) -> CaseOutcome:
        """Explain one case with every method; never raises."""
        from napari_xaimed._core.provenance import cli_inputs, provenance
        from napari_xaimed.attribution import attribute, truth_scores
        from napari_xaimed.explanations.structures import relevance_by_structure

        start = time.perf_counter()
        rows, outputs, structures = [], [], []
        try:
            image = _read_3d(case.files["image"], "image")
            mask = None
            if "mask" in case.files:
                mask_volume = _read_3d(case.files["mask"], "mask")
                _same_grid(image, mask_volume, ("image", "mask"))
                mask = mask_volume.data > 0
                # the mask's own values label its structures (whole numbers; else one label)
                whole = np.array_equal(mask_volume.data, np.round(mask_volume.data))
                labels = mask_volume.data.astype(np.int64) if whole else mask.astype(np.uint8)
                if not mask.any():
                    raise XaimedError(f"the mask {case.files['mask'].name} is empty: the "
                                      "explanation metrics need the region the model should "
                                      "find; fix the mask or leave the cell empty.")
            model = self._model()
            inputs = cli_inputs(image=(case.files["image"], image))
            for method in self.methods:
                result = attribute(model, image.data, method, spacing=image.spacing,
                                   **self.params, **self.method_params.get(method, {}))
                row = {"method": method, "target": result.target,
                       "target_score": result.scores[result.target]
                       if result.target is not None and result.target < len(result.scores)
                       else math.nan,
                       "method_seconds": result.seconds, "device": result.device}
                if mask is not None:
                    row.update(truth_scores(result.map, mask, spacing=image.spacing,
                                            tolerance_mm=self.tolerance_mm, k=self.k))
                    table = relevance_by_structure(result.map, labels, spacing=image.spacing,
                                                   margin_mm=self.margin_mm)
                    structures += [{"method": method, **r} for r in table.to_dict("records")]
                rows.append(row)
                # the widget's attribution provenance, so `napari-xaimed rerun` redoes it
                meta = provenance(
                    "attribution", sources=[str(case.files["image"])],
                    params={"method": method, **self.params,
                            **self.method_params.get(method, {}), **result.params,
                            "spacing": image.spacing},
                    seconds=result.seconds, device=result.device, target=result.target,
                    model=result.model, scores=result.scores, case_id=case.case_id,
                    inputs=inputs)
                outputs.append(OutputFiles.volume(case.stem, f"{method}.nii.gz", result.map,
                                                  image.spacing, image.affine, meta))
        except Exception as exc:
            return CaseOutcome.failed(describe_failure(exc), time.perf_counter() - start)
        return CaseOutcome(status="ok", rows=rows, outputs=outputs, instances=structures,
                           seconds=time.perf_counter() - start, worker=socket.gethostname())
