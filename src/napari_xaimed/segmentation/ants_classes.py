"""The ANTs side of tissue classification: what runs in the spawned process, and its log.

:func:`run` is the child's entry point (see ``registration.spawned``): it reads
``folder/volume.npy`` (and ``folder/mask.npy`` when given), runs Atropos as ``job`` says and
saves ``labels.npy`` and ``probabilities.npy`` into the folder. ANTsPy's ``atropos`` writes its
probability images to the temporary folder, so that is pointed at the job folder, which the
parent removes.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress

TOTAL = 1000  # progress in thousandths, like registration


def _mask(ants: Any, image: Any, folder: Path, method: str) -> Any:
    path = folder / "mask.npy"
    if path.exists():
        mask = ants.from_numpy(np.load(path).astype(np.float32), spacing=image.spacing)
    else:
        # what ants.kmeans_segmentation does: voxels above 1% of the intensity range, cleaned
        # up; the classes are then the tissue inside, not the background
        low, high = float(image.min()), float(image.max())
        mask = ants.get_mask(image, low_thresh=low + 0.01 * (high - low), high_thresh=high,
                             cleanup=2)
    if method == "kmeans":
        mask = ants.iMath(mask, "FillHoles").threshold_image(1, 2)
    if float(mask.sum()) == 0:
        raise XaimedError("the mask for the tissue classes is empty: give a mask that covers "
                          "the tissue to classify.")
    return mask


def run(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Classify ``folder/volume.npy`` into ``job["n_classes"]`` tissue classes (child side)."""
    import ants

    tempfile.tempdir = str(folder)  # atropos' probability images land here, then go with it
    image = ants.from_numpy(np.load(folder / "volume.npy").astype(np.float32),
                            spacing=tuple(job["spacing"]))
    method, k = job["method"], int(job["n_classes"])
    mask = _mask(ants, image, folder, method)
    if method == "kmeans":  # ants.kmeans_segmentation's recipe, with the seed option passed on
        image = ants.iMath(image, "Normalize")
    neighbourhood = "x".join(["1"] * 3)
    arguments = {"a": image, "x": mask, "i": f"kmeans[{k}]",
                 "m": f"[{float(job['mrf'])},{neighbourhood}]",
                 "c": f"[{int(job['iterations'])},0]", "v": 1,
                 "r": 0 if job["reproducible"] else 1}
    try:
        out = ants.atropos(**arguments)
    except Exception as exc:
        raise XaimedError(_explain(folder, exc)) from exc
    labels = out["segmentation"].numpy().astype(np.uint8)
    probabilities = np.stack([p.numpy().astype(np.float32) for p in out["probabilityimages"]])
    np.save(folder / "labels.npy", labels)
    np.save(folder / "probabilities.npy", probabilities)
    print("XAIMED tissue classes saved", flush=True)
    return {"mask_voxels": int(mask.sum()), "ants_spacing": list(image.spacing)}


def _explain(folder: Path, exc: Exception) -> str:
    log = (folder / "log.txt").read_text(errors="replace") if (folder / "log.txt").exists() else ""
    found = re.findall(r"ITK ERROR: [^:]*: (.*)", log)
    reason = found[-1].strip() if found else str(exc)
    hint = ("a class ended up with (nearly) constant intensity: use fewer classes, or a mask "
            "that leaves out the flat background" if "singular" in reason.lower() else
            "check that the volume has at least n_classes distinct intensity levels in the mask")
    return f"Atropos failed ({reason}): {hint}."


_ITERATION = re.compile(r"Iteration (\d+) \(of (\d+)\)")


def log_progress(text: str) -> Progress:
    """Where Atropos is, from its verbose log (``Iteration k (of n)`` lines)."""
    if "XAIMED tissue classes saved" in text:
        return Progress(TOTAL, TOTAL, "tissue classes done")
    found = _ITERATION.findall(text)
    if not found:
        return Progress(0, TOTAL, "Atropos is starting")
    done, total = (int(v) for v in found[-1])
    return Progress(min(int(TOTAL * done / max(total, 1)), TOTAL - 1), TOTAL,
                    f"Atropos iteration {done} of {total}")
