"""The segmentation widget runs its job in a worker, replaces its own output, and fails cleanly."""

import time

import numpy as np
import pytest

from napari_xaimed._core.progress import Progress
from napari_xaimed.viewer.widgets._job import JobPanel
from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    viewer.layers["lesion ct"].scale = (2.0, 1.0, 1.0)
    return viewer


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job.finished, timeout=30000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_segments_into_a_layer_over_its_source(qtbot, viewer_with_sample):
    viewer = viewer_with_sample
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.classes.value = 4
    widget.smoothing.value = 1.0
    widget.min_size.value = 20.0
    source = viewer.layers["lesion ct"].data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    out = viewer.layers["Otsu segmentation [lesion ct]"]
    truth = viewer.layers["lesion truth"].data > 0
    assert out._type_string == "labels"
    np.testing.assert_allclose(out.scale, (2.0, 1.0, 1.0))
    found = out.data > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.85
    prov = out.metadata["xaimed"]
    assert prov["kind"] == "segmentation" and prov["sources"] == ["lesion ct"]
    assert prov["params"]["classes"] == 4 and prov["seconds"] >= 0
    np.testing.assert_array_equal(viewer.layers["lesion ct"].data, source)  # input untouched

    # a second run with other settings updates the same layer instead of adding a copy
    n_layers = len(viewer.layers)
    widget.classes.value = 2
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers
    out = viewer.layers["Otsu segmentation [lesion ct]"]
    assert out.metadata["xaimed"]["params"]["classes"] == 2


def test_bad_input_is_a_notification_and_adds_nothing(qtbot, viewer_with_sample, monkeypatch):
    viewer = viewer_with_sample
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer.add_image(np.zeros((8, 8), np.float32), name="flat")
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["flat"]
    n_layers = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "failed"
    assert len(viewer.layers) == n_layers
    assert shown and "3D" in shown[0]
    assert "Failed" in widget.job.status.text()
    assert widget.job.run_button.isEnabled()


def slow_steps(n, delay, made):
    for i in range(n):
        time.sleep(delay)
        yield Progress(i + 1, n, f"step {i + 1}")
    made.append("result")
    return "result"


def test_cancel_stops_between_steps_and_adds_nothing(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    made, results = [], []
    with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
        panel.start(slow_steps(200, 0.02, made), lambda r, s: results.append(r), "slow job")
        qtbot.waitUntil(lambda: panel.bar.value() >= 2, timeout=5000)
        assert panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
        started = time.perf_counter()
        panel.cancel()
    assert blocker.args == ["cancelled"]
    assert time.perf_counter() - started < 1.0
    assert made == [] and results == []
    assert "Cancelled" in panel.status.text()
    assert panel.run_button.isEnabled() and not panel.running


def test_progress_reaches_the_bar(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    results = []
    with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
        panel.start(slow_steps(5, 0.01, []), lambda r, s: results.append(r), "short job")
    assert blocker.args == ["done"] and results == ["result"]
    assert panel.bar.maximum() == 5 and panel.bar.value() == 5


def tissue_phantom():
    rng = np.random.default_rng(0)
    shape = (24, 32, 32)
    z, y, x = np.indices(shape)
    body = ((z - 12) / 10) ** 2 + ((y - 16) / 14) ** 2 + ((x - 16) / 14) ** 2 < 1
    truth = np.zeros(shape, np.uint8)
    truth[body] = 1
    truth[body & (x > 12)] = 2
    truth[body & (x > 21)] = 3
    image = np.array([0.0, 2.0, 3.0, 4.0])[truth] + rng.normal(0, 0.3, shape) * body
    return image.astype(np.float32), truth


def test_method_fields_follow_the_method(qtbot, make_napari_viewer):
    widget = SegmentationWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.show()  # magicgui reports a field visible only when its window is shown
    widget.method.value = "atropos"
    assert widget.n_classes.visible and widget.mrf.visible and widget.tissue_mask.visible
    from napari_xaimed._core import spawned
    from napari_xaimed._core.ants_import import ANTS_PRELOAD

    warm = spawned._WARM.get(spawned._key(ANTS_PRELOAD,
                                          {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": 1}))
    assert warm is not None and warm.poll() is None  # ANTs is being imported ahead of the run
    assert widget.mrf.value == pytest.approx(0.2)
    assert not (widget.opening.visible or widget.min_size.visible or widget.classes.visible)
    assert not widget.preview_button.visible
    widget.method.value = "threshold"
    assert widget.value.visible and not widget.percentile.visible
    widget.threshold_by.value = "percentile"
    assert widget.percentile.visible and not widget.value.visible
    assert widget.params()["percentile"] == 95.0 and "value" not in widget.params()
    assert widget.opening.visible and widget.fill_holes.visible and widget.preview_button.visible
    assert not widget.min_distance.visible
    widget.split.value = "watershed"
    assert widget.min_distance.visible and widget.params()["split"] == "watershed"


def test_tissue_classes_add_labels_and_probabilities_and_replace_them(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    image, truth = tissue_phantom()
    viewer.add_image(image, name="mri", scale=(2.0, 1.0, 1.0), translate=(5.0, 0.0, -3.0))
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["mri"]
    widget.method.value = "atropos"
    widget.n_classes.value = 3
    assert run_and_wait(qtbot, widget) == "done"
    labels = viewer.layers["Atropos segmentation [mri]"]
    np.testing.assert_allclose(labels.scale, (2.0, 1.0, 1.0))
    np.testing.assert_allclose(labels.translate, (5.0, 0.0, -3.0))
    body = truth > 0
    assert (labels.data[body] == truth[body]).mean() > 0.9
    assert labels.metadata["xaimed"]["params"]["method"] == "atropos"
    for k in (1, 2, 3):
        prob = viewer.layers[f"Atropos class {k} probability [mri]"]
        assert prob._type_string == "image" and prob.data.shape == image.shape
        np.testing.assert_allclose(prob.scale, (2.0, 1.0, 1.0))
        np.testing.assert_allclose(prob.translate, (5.0, 0.0, -3.0))
        assert prob.metadata["xaimed"]["class"] == k
        assert prob.colorbar.visible and not prob.visible  # the labels show the classes
    n_layers = len(viewer.layers)
    widget.n_classes.value = 2  # fewer classes: the third probability layer goes
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers - 1
    assert "Atropos class 3 probability [mri]" not in viewer.layers
    assert viewer.layers["Atropos segmentation [mri]"].data.max() == 2


def test_preview_shows_the_current_slice(make_napari_viewer):
    from napari_xaimed.segmentation import segment

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    layer = viewer.layers["lesion ct"]
    layer.scale = (2.0, 1.0, 1.0)
    widget = SegmentationWidget(viewer)
    widget.image.value = layer
    widget.classes.value = 3
    widget.opening.value = 1.0
    z = int(np.argmax((viewer.layers["lesion truth"].data > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, z * 2.0)
    widget.preview_button.clicked()
    preview = viewer.layers["Segmentation preview [lesion ct]"]
    assert preview.data.shape == (1, *layer.data.shape[1:])
    np.testing.assert_allclose(preview.translate, (z * 2.0, 0.0, 0.0))
    full = segment(layer.data, "otsu", spacing=(2.0, 1.0, 1.0), classes=3, opening_mm=1.0,
                   instances=False)
    np.testing.assert_array_equal(preview.data[0], full[z])
    assert preview.data.any()


def test_model_segmentation_adds_labels_and_foreground_probability(qtbot, viewer_with_sample,
                                                                    monkeypatch):
    from napari_xaimed.segmentation import segment_with_model

    viewer = viewer_with_sample
    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget)
    widget.show()  # magicgui reports a field visible only when its window is shown
    widget.image.value = viewer.layers["lesion ct"]
    widget.method.value = "model"
    assert widget.model_source.visible and widget.overlap.visible
    assert not widget.value.visible and not widget.model_file.visible
    assert run_and_wait(qtbot, widget) == "done"
    labels = viewer.layers["Model segmentation [lesion ct]"]
    probability = viewer.layers["Model foreground probability [lesion ct]"]
    expected = segment_with_model(viewer.layers["lesion ct"].data, "bundled-segmenter",
                                  spacing=(2.0, 1.0, 1.0))
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_allclose(probability.data, expected.probability, atol=1e-6)
    for layer in (labels, probability):
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    assert probability.metadata["xaimed"]["kind"] == "foreground probability"
    # shown with its titled colour bar, as the attribution maps are
    assert probability.visible and probability.colorbar.visible
    assert any(o.visible and o.text.startswith(probability.name)
               for k, o in viewer.canvas.overlays.items() if "heatmap title" in k)
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget.model_source.value = "file"
    widget.job.run_button.click()
    assert "model file" in shown[-1]


def test_a_lazy_layer_is_segmented_slab_by_slab_as_in_memory(qtbot, make_napari_viewer,
                                                             tmp_path, monkeypatch):
    """A Zarr opened lazily: the widget writes the labels to a Zarr store and shows them as a
    dask layer, equal to the in-memory labels of the same image; another method is refused."""
    import dask.array as da

    from napari_xaimed.io import read_volume
    from napari_xaimed.io.lazy import write_zarr
    from napari_xaimed.samples import lesion_volume

    sample = lesion_volume(shape=(48, 48, 48), spacing=(2.0, 1.0, 1.0), seed=3)
    write_zarr(tmp_path / "ct.zarr", sample.image, (2.0, 1.0, 1.0), chunks=(8, 48, 48))
    viewer = make_napari_viewer()
    lazy = read_volume(tmp_path / "ct.zarr")
    assert isinstance(lazy.data, da.Array)
    viewer.add_image(lazy.data, name="lazy ct", scale=lazy.spacing)
    viewer.add_image(sample.image, name="ct", scale=(2.0, 1.0, 1.0))
    widget = SegmentationWidget(viewer)
    widget.min_size.value = 20.0
    results = {}
    for name in ("ct", "lazy ct"):
        widget.image.value = viewer.layers[name]
        assert run_and_wait(qtbot, widget) == "done", widget.job.status.text()
        results[name] = viewer.layers[f"Otsu segmentation [{name}]"]
    out = results["lazy ct"]
    assert isinstance(out.data, da.Array)
    np.testing.assert_allclose(out.scale, (2.0, 1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(out.data), results["ct"].data)
    assert out.metadata["xaimed"]["facts"]["labels_store"].endswith("labels.zarr")

    shown = []
    monkeypatch.setattr("napari_xaimed.viewer.widgets._segmentation_lazy.report_error",
                        lambda exc: shown.append(str(exc)))
    widget.method.value = "kmeans"
    count = len(viewer.layers)
    widget.run()
    assert "read lazily" in shown[-1] and len(viewer.layers) == count


def test_a_lazy_layer_is_segmented_by_the_model_band_by_band(qtbot, make_napari_viewer,
                                                              monkeypatch):
    """The model on a dask layer: labels and foreground probability as dask layers over Zarr
    stores, equal to the in-memory segmentation; what needs the whole volume is refused."""
    import dask.array as da

    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation import segment_with_model

    sample = lesion_volume(shape=(40, 48, 48), spacing=(2.0, 1.0, 1.0), seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(sample.image, chunks=(8, -1, -1)), name="lazy ct",
                     scale=(2.0, 1.0, 1.0), translate=(4.0, 0.0, -2.0))
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    widget.method.value = "model"
    widget.roi_size.value = 32
    widget.overlap.value = 0.5
    assert run_and_wait(qtbot, widget) == "done", widget.job.status.text()
    labels = viewer.layers["Model segmentation [lazy ct]"]
    probability = viewer.layers["Model foreground probability [lazy ct]"]
    expected = segment_with_model(sample.image, "bundled-segmenter", spacing=(2.0, 1.0, 1.0),
                                  roi_size=32, overlap=0.5)
    for layer in (labels, probability):
        assert isinstance(layer.data, da.Array)
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
        np.testing.assert_allclose(layer.translate, (4.0, 0.0, -2.0))
    np.testing.assert_array_equal(np.asarray(labels.data), expected.labels)
    np.testing.assert_allclose(np.asarray(probability.data), expected.probability, atol=1e-5)
    assert probability.metadata["xaimed"]["kind"] == "foreground probability"

    shown = []
    monkeypatch.setattr("napari_xaimed.viewer.widgets._segmentation_lazy.report_error",
                        lambda exc: shown.append(str(exc)))
    widget.largest.value = True
    count = len(viewer.layers)
    widget.run()
    assert "largest component" in shown[-1] and len(viewer.layers) == count


def test_a_lazy_layer_previews_one_plane_in_a_worker(qtbot, make_napari_viewer, tmp_path):
    """Preview on a dask layer: Otsu's threshold from one slab-by-slab pass (then kept), the
    slice equal to the lazy segmentation's; a second preview reads only the chunk holding
    its plane; an option that looks across slabs is refused and nothing is added."""
    import dask.array as da

    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation.lazy import segment_lazy

    sample = lesion_volume(shape=(48, 48, 48), spacing=(2.0, 1.0, 1.0), seed=3)
    read: list[int] = []

    def block(x, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return x

    data = da.from_array(sample.image, chunks=(8, 48, 48)).map_blocks(block, dtype=np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="lazy ct", scale=(2.0, 1.0, 1.0))
    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value = layer
    widget.classes.value = 3
    full = segment_lazy(sample.image, tmp_path / "labels.zarr", "otsu", (2.0, 1.0, 1.0),
                        classes=3, instances=False).labels.compute()
    counts = full.sum(axis=(1, 2))
    first = int(np.argmax(counts))
    second = int(np.argmax(np.where(np.arange(48) // 8 != first // 8, counts, -1)))
    for z in (first, second):
        viewer.dims.set_point(0, z * 2.0)
        read.clear()
        with qtbot.waitSignal(widget.job.finished, timeout=60000):
            widget.preview_button.clicked()
        preview = viewer.layers["Segmentation preview [lazy ct]"]
        np.testing.assert_array_equal(preview.data[0], full[z])
        np.testing.assert_allclose(preview.translate, (z * 2.0, 0.0, 0.0))
    assert preview.data[0].any()
    assert read == [second // 8], "the second preview read more than its plane's chunk"
    assert len([n for n in viewer.layers if n.name.startswith("Segmentation preview")]) == 1

    widget.opening.value = 1.0
    count = len(viewer.layers)
    with qtbot.waitSignal(widget.job.finished, timeout=60000):
        widget.preview_button.clicked()
    assert "looks across slabs" in widget.job.status.text()
    assert len(viewer.layers) == count
    assert np.array_equal(np.asarray(layer.data), sample.image)


def dice(found, truth):
    return 2 * (found & truth).sum() / (found.sum() + truth.sum())


def test_default_otsu_finds_the_lesions_and_the_preview_goes(qtbot, viewer_with_sample):
    """Issue 29 item 8: the form's defaults on the lesion sample find the lesions (Dice against
    the sample's truth; Otsu's 2 classes found the body, Dice 0.053), and the slice preview is
    removed once Segment ran."""
    viewer = viewer_with_sample
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.preview()
    assert "Segmentation preview [lesion ct]" in viewer.layers
    assert run_and_wait(qtbot, widget) == "done"
    truth = viewer.layers["lesion truth"].data > 0
    found = viewer.layers["Otsu segmentation [lesion ct]"].data > 0
    assert dice(found, truth) >= 0.9
    assert "Segmentation preview [lesion ct]" not in viewer.layers


def test_each_method_keeps_its_own_layer(qtbot, viewer_with_sample):
    """Issue 29 item 3: Otsu, threshold and the model each write a layer named after the
    method, side by side; a rerun of one replaces only its own. The model's layer names its
    classes (the bundled segmenter's config) in its features and the dock's legend."""
    from napari_xaimed.models.loading import BUNDLED_SEGMENTER, load_model
    from napari_xaimed.segmentation import segment

    viewer = viewer_with_sample
    ct = viewer.layers["lesion ct"]
    widget = SegmentationWidget(viewer)
    widget.image.value = ct
    assert run_and_wait(qtbot, widget) == "done"
    widget.method.value = "threshold"
    widget.value.value = 0.8
    assert run_and_wait(qtbot, widget) == "done"
    widget.method.value = "model"
    assert run_and_wait(qtbot, widget) == "done"
    otsu = viewer.layers["Otsu segmentation [lesion ct]"]
    threshold = viewer.layers["Threshold segmentation [lesion ct]"]
    model = viewer.layers["Model segmentation [lesion ct]"]
    assert "Model foreground probability [lesion ct]" in viewer.layers
    np.testing.assert_array_equal(threshold.data > 0, ct.data > 0.8)
    np.testing.assert_array_equal(otsu.data, segment(ct.data, "otsu", (2.0, 1.0, 1.0),
                                                     classes=3))
    classes = load_model(BUNDLED_SEGMENTER).classes
    assert len(classes) >= 2
    assert list(model.features["name"]) == ["background", *classes[1:]]
    assert [name for _, name in widget.legend.entries] == [
        f"{k}: {name}" for k, name in enumerate(classes) if k > 0]

    n_layers = len(viewer.layers)
    widget.method.value = "otsu"
    widget.classes.value = 2
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers
    assert viewer.layers["Otsu segmentation [lesion ct]"].metadata["xaimed"]["params"][
        "classes"] == 2
    np.testing.assert_array_equal(viewer.layers["Threshold segmentation [lesion ct]"].data,
                                  threshold.data)
    assert viewer.layers["Model segmentation [lesion ct]"] is model


def test_classes_get_names_colours_and_a_legend(qtbot, viewer_with_sample):
    """Issue 29 item 5: class labels are named (1 the darkest) in the layer's features, so
    napari's status bar shows the name, and the legend shows each class's colour as drawn."""
    viewer = viewer_with_sample
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.method.value = "multiotsu"
    widget.classes.value = 3
    assert run_and_wait(qtbot, widget) == "done"
    layer = viewer.layers["Multi-Otsu segmentation [lesion ct]"]
    names = ["class 1 (darkest)", "class 2", "class 3 (brightest)"]
    assert list(layer.features["name"]) == ["background", *names]
    expected = []
    for k, name in enumerate(names, start=1):
        r, g, b = (int(round(255 * c)) for c in layer.get_color(k)[:3])
        expected.append((f"#{r:02x}{g:02x}{b:02x}", f"{k}: {name}"))
    assert widget.legend.entries == expected and not widget.legend.isHidden()
    z, y, x = np.argwhere(layer.data == 3)[0]
    viewer.dims.set_point(0, z * 2.0)  # the status bar reads the slice shown
    status = layer.get_status((z * 2.0, float(y), float(x)), world=True)
    assert "class 3 (brightest)" in str(status)

    # another image: the legend and status line of the old result go
    viewer.add_image(np.zeros((4, 5, 6), np.float32), name="other")
    widget.image.value = viewer.layers["other"]
    assert widget.legend.entries == [] and widget.job.status.text() == ""
