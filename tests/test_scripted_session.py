"""A whole research session as a user's script would run it: samples, segmentation, evaluation,
registration, attribution; every output saved as NIfTI with its JSON provenance, then reopened
in a fresh viewer through the plugin's reader with values, voxel size and provenance intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_xaimed import samples
from napari_xaimed._core.provenance import provenance
from napari_xaimed.attribution import attribute
from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import write_volume
from napari_xaimed.registration import register
from napari_xaimed.segmentation import segment


def run_session(out: Path) -> dict[str, tuple[np.ndarray, tuple[float, ...], dict]]:
    """The script: returns, per saved file, the array written, its spacing and provenance."""
    saved: dict[str, tuple[np.ndarray, tuple[float, ...], dict]] = {}

    def save(name: str, data: np.ndarray, spacing: tuple[float, ...], prov: dict, *,
             is_label: bool | None = None) -> None:
        path = out / f"{name}.nii.gz"
        written = write_volume(path, data, spacing, is_label=is_label, metadata=prov)
        assert path in written and path.with_suffix("").with_suffix(".json") in written
        saved[name] = (data, spacing, prov)

    lesion = samples.lesion_volume(shape=(40, 48, 44), spacing=(2.0, 0.8, 0.9), n_lesions=2,
                                   seed=11)
    labels = segment(lesion.image, method="otsu", spacing=lesion.spacing, classes=4,
                     smoothing_mm=1.0, min_size_mm3=20.0)
    save("segmentation", labels, lesion.spacing,
         provenance("segmentation", sources=["lesion ct"],
                    params={"method": "otsu", "classes": 4, "smoothing_mm": 1.0,
                            "min_size_mm3": 20.0}), is_label=True)

    pair = samples.panoptic_pair(shape=(40, 40, 40), spacing=(1.2, 1.0, 1.0), n_things=6, seed=5)
    panoptic = evaluate(pair.reference, pair.prediction, spacing=pair.spacing,
                        instance_input=True, keep_maps=True)
    errors = panoptic["all"].error_map
    save("errors", errors, pair.spacing,
         provenance("panoptic evaluation", sources=["reference", "prediction"],
                    params={"instance_input": True},
                    summary=[c.summary() for c in panoptic.classes.values()]), is_label=True)

    scans = samples.longitudinal_pair(shape=(32, 36, 34), spacing=(1.5, 1.0, 0.9), seed=3)
    moved = register(scans.fixed, scans.moving, fixed_spacing=scans.spacing,
                     moving_spacing=scans.spacing, transform="Affine", iterations=(20, 10),
                     seed=0)
    reg_prov = provenance("registration", sources=["prior", "current"], params=moved.params,
                          seconds=moved.seconds, metrics=moved.metrics)
    save("warped", moved.warped, scans.spacing, reg_prov)
    save("jacobian", moved.jacobian, scans.spacing, reg_prov)
    # components first, as NIfTI's 4th axis (as the command line writes it)
    save("displacement", np.moveaxis(moved.displacement, -1, 0), scans.spacing, reg_prov)

    explained = attribute("bundled", lesion.image, "integrated_gradients", steps=8,
                          device="cpu", spacing=lesion.spacing)
    save("integrated_gradients", explained.map, lesion.spacing,
         provenance("attribution", sources=["lesion ct"], seconds=explained.seconds,
                    device=explained.device,
                    params={"method": explained.method, **explained.params},
                    model=explained.model, scores=explained.scores))
    return saved


def test_a_session_saved_and_reopened_keeps_values_spacing_and_provenance(
        tmp_path, make_napari_viewer):
    saved = run_session(tmp_path)
    # the results are real ones, not empty maps that would survive any round trip
    assert set(np.unique(saved["segmentation"][0])) > {0}
    assert np.ptp(saved["errors"][0]) > 0 and np.ptp(saved["integrated_gradients"][0]) > 0
    assert saved["warped"][2]["metrics"]["ncc_after"] > saved["warped"][2]["metrics"][
        "ncc_before"]

    viewer = make_napari_viewer()
    for name, (data, spacing, prov) in saved.items():
        (layer,) = viewer.open(tmp_path / f"{name}.nii.gz", plugin="napari-xaimed")
        assert layer.name == name
        expected_type = "labels" if name in ("segmentation", "errors") else "image"
        assert layer._type_string == expected_type, name
        if expected_type == "labels":
            np.testing.assert_array_equal(layer.data, data, err_msg=name)
        else:
            np.testing.assert_allclose(layer.data, data.astype(np.float32), rtol=1e-6,
                                       atol=1e-7, err_msg=name)
        assert layer.data.shape == data.shape
        np.testing.assert_allclose(layer.scale[-3:], spacing, rtol=1e-6, err_msg=name)
        # provenance comes back exactly as JSON keeps it, from the file beside the volume
        assert layer.metadata["xaimed"] == json.loads(json.dumps(prov)), name
        on_disk = json.loads((tmp_path / f"{name}.json").read_text())
        assert on_disk == layer.metadata["xaimed"]
    assert len(viewer.layers) == len(saved)
    reopened = viewer.layers["integrated_gradients"].metadata["xaimed"]
    assert reopened["model"]["source"] == "bundled"
    assert reopened["params"]["method"] == "integrated_gradients"
