"""The "resample onto the reference grid" that grid-mismatch errors advise, as an action in the
dock (issue 29 item 7): nearest for labels, linear for images, a new layer with provenance."""

import numpy as np
import SimpleITK as sitk

from napari_xaimed.io.grid import Grid, same_grid
from napari_xaimed.viewer.widgets.explanations import ExplanationWidget

SHAPE = (10, 12, 14)


def sitk_resample(layer, reference, interpolator):
    """SimpleITK's Resample of the layer onto the reference grid, identity transform."""
    image = sitk.GetImageFromArray(np.asarray(layer.data))
    image.SetSpacing([float(s) for s in layer.scale[::-1]])
    image.SetOrigin([float(t) for t in layer.translate[::-1]])
    ref = sitk.Image(*reference.data.shape[::-1], image.GetPixelID())
    ref.SetSpacing([float(s) for s in reference.scale[::-1]])
    ref.SetOrigin([float(t) for t in reference.translate[::-1]])
    return sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), interpolator, 0))


def inside(layer, reference):
    """Reference voxels whose centre lies strictly inside the layer's voxel-centre box."""
    ok = np.ones(reference.data.shape, bool)
    for axis, index in enumerate(np.indices(reference.data.shape, dtype=float)):
        world = reference.translate[axis] + index * reference.scale[axis]
        at = (world - layer.translate[axis]) / layer.scale[axis]
        ok &= (at > 0) & (at < reference.data.shape[axis] - 1)
    return ok


def test_a_grid_mismatch_offers_to_resample_the_mask_onto_the_heatmap(make_napari_viewer,
                                                                      qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    heat = viewer.add_image(rng.random(SHAPE).astype(np.float32), name="heat",
                            scale=(2.0, 1.0, 1.0))
    truth = np.zeros(SHAPE, np.uint8)
    truth[3:7, 4:9, 5:11] = 3
    mask = viewer.add_labels(truth, name="truth", scale=(1.8, 1.1, 0.9),
                             translate=(0.35, -0.4, 0.7))  # no voxel centre half-way (ties)
    widget = ExplanationWidget(viewer)
    other = ExplanationWidget(viewer)  # a dock without the pair picked
    qtbot.addWidget(widget)
    qtbot.addWidget(other)
    widget.check.value = "against mask"
    widget.heatmap.value, widget.mask.value = heat, mask
    widget.job.run_button.click()
    assert "do not overlay" in shown[-1] and not widget.job.running
    offer = widget.resample_offer
    assert not offer.isHidden() and other.resample_offer.isHidden()
    assert "'truth'" in offer.job.run_button.text() and "'heat'" in offer.job.run_button.text()
    with qtbot.waitSignal(offer.job.finished, timeout=60000) as ended:
        offer.job.run_button.click()
    assert ended.args[0] == "done"
    new = viewer.layers["Resampled onto heat [truth]"]
    assert new._type_string == "labels" and widget.mask.value is new
    assert same_grid(new, heat)
    np.testing.assert_array_equal(mask.data, truth)  # the input is left as it was
    want = sitk_resample(mask, heat, sitk.sitkNearestNeighbor)
    keep = inside(mask, heat)
    np.testing.assert_array_equal(new.data[keep], want[keep])
    assert set(np.unique(new.data)) == {0, 3}
    prov = new.metadata["xaimed"]
    assert prov["kind"] == "resample onto grid" and prov["sources"] == ["truth", "heat"]
    assert prov["params"]["interpolation"] == "nearest"
    assert prov["params"]["reference_grid"]["spacing"] == [2.0, 1.0, 1.0]
    # the check now runs on the resampled mask
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as ended:
        widget.job.run_button.click()
    assert ended.args[0] == "done" and widget.table.rows
    assert not offer.isHidden() and "run again" in offer.note.text()
    widget.mask.value = None  # another input: the offer is stale
    assert offer.isHidden()


def test_an_image_is_resampled_linearly(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda text: None)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    heat = viewer.add_image(rng.random(SHAPE).astype(np.float32), name="heat",
                            scale=(2.0, 1.0, 1.0))
    ref = viewer.add_image(rng.random(SHAPE).astype(np.float32), name="ref",
                           scale=(2.0, 1.0, 1.0), translate=(0.5, 0.25, -0.3))
    atlas = viewer.add_labels(np.ones(SHAPE, np.uint8), name="atlas", scale=(2.0, 1.0, 1.0))
    widget = ExplanationWidget(viewer)
    qtbot.addWidget(widget)
    widget.check.value = "by region"
    widget.heatmap.value, widget.regions.value, widget.reference.value = heat, atlas, ref
    widget.job.run_button.click()
    offer = widget.resample_offer
    assert not offer.isHidden()
    with qtbot.waitSignal(offer.job.finished, timeout=60000):
        offer.job.run_button.click()
    new = viewer.layers["Resampled onto heat [ref]"]
    assert new._type_string == "image" and widget.reference.value is new
    assert new.metadata["xaimed"]["params"]["interpolation"] == "linear"
    want = sitk_resample(ref, heat, sitk.sitkLinear)
    keep = inside(ref, heat)
    assert keep.sum() > 500
    np.testing.assert_allclose(new.data[keep], want[keep], atol=1e-5)
    assert Grid(new.data.shape, tuple(new.scale), tuple(new.translate)).shape == SHAPE


def test_a_prediction_of_another_shape_is_offered_and_then_evaluated(make_napari_viewer, qtbot,
                                                                     monkeypatch):
    """The common case: a prediction made at another voxel size (another shape). Resampled
    onto the reference grid, it evaluates; the reference sits in a 2 mm box, so nearest
    neighbour gives it back exactly (checked against SimpleITK too)."""
    from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[2:6, 2:6, 4:10] = 1
    prediction = reference[::2, ::2, ::2].copy()  # the same boxes at 2 mm
    ref = viewer.add_labels(reference, name="reference")
    pred = viewer.add_labels(prediction, name="prediction", scale=(2.0, 2.0, 2.0),
                             translate=(0.5, 0.5, 0.5))
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value, widget.prediction.value = ref, pred
    widget.job.run_button.click()
    assert "differ in shape" in shown[-1] and not widget.job.running
    offer = widget.resample_offer
    assert not offer.isHidden()
    with qtbot.waitSignal(offer.job.finished, timeout=60000):
        offer.job.run_button.click()
    new = viewer.layers["Resampled onto reference [prediction]"]
    assert widget.prediction.value is new and new.data.shape == reference.shape
    want = sitk_resample(pred, ref, sitk.sitkNearestNeighbor)
    keep = inside(pred, ref)
    np.testing.assert_array_equal(new.data[keep], want[keep])
    np.testing.assert_array_equal(new.data[1:11, 1:11, 1:11], reference[1:11, 1:11, 1:11])
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as ended:
        widget.job.run_button.click()
    assert ended.args[0] == "done"
