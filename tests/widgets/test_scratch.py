"""The stores behind the widgets' lazy outputs live while a layer shows them, and no longer."""

import numpy as np
import pytest

from napari_xaimed.viewer.widgets import _scratch
from napari_xaimed.viewer.widgets.attribution import AttributionWidget
from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    base = tmp_path / "scratch"
    monkeypatch.setenv(_scratch.SCRATCH_ENV, str(base))
    return base


def folders(base, prefix):
    return sorted(base.glob(f"{prefix}*")) if base.exists() else []


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_a_folder_lives_until_the_last_layer_reading_it_leaves(make_napari_viewer, scratch):
    viewer = make_napari_viewer()
    folder = _scratch.scratch_folder("xaimed-test-")
    assert folder.parent == scratch and folder.is_dir()
    (folder / "store.zarr").mkdir()
    first = viewer.add_image(np.zeros((2, 3, 4)), name="first")
    second = viewer.add_image(np.zeros((2, 3, 4)), name="second")
    _scratch.keep_while_shown(viewer, first, folder)
    _scratch.keep_while_shown(viewer, second, folder)
    viewer.layers.remove(first)
    assert folder.is_dir()  # the second layer still reads it
    viewer.layers.remove(second)
    assert not folder.exists()


def test_an_update_in_place_releases_the_old_folder(make_napari_viewer, scratch):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((2, 3, 4)), name="output")
    old, new = _scratch.scratch_folder("xaimed-test-"), _scratch.scratch_folder("xaimed-test-")
    _scratch.keep_while_shown(viewer, layer, old)
    _scratch.keep_while_shown(viewer, layer, new)
    assert not old.exists() and new.is_dir()
    _scratch.keep_while_shown(viewer, layer, None)  # the layer now holds in-memory data
    assert not new.exists()


def test_only_its_own_folders_are_ever_deleted(tmp_path):
    mine = tmp_path / "user data"
    mine.mkdir()
    _scratch.discard(mine)
    _scratch.release(mine)
    assert mine.is_dir()


def test_lazy_labels_are_deleted_with_their_layer_and_replaced_by_a_rerun(
        qtbot, make_napari_viewer, scratch):
    import dask.array as da

    from napari_xaimed.samples import lesion_volume

    sample = lesion_volume(shape=(32, 40, 40), spacing=(2.0, 1.0, 1.0), seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(sample.image, chunks=(8, -1, -1)), name="lazy ct",
                     scale=(2.0, 1.0, 1.0))
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    assert run_and_wait(qtbot, widget) == "done", widget.job.status.text()
    (first,) = folders(scratch, "xaimed-labels-")
    out = viewer.layers["Otsu segmentation [lazy ct]"]
    assert out.metadata["xaimed"]["facts"]["labels_store"].startswith(str(first))
    labels = np.asarray(out.data)

    assert run_and_wait(qtbot, widget) == "done"  # the rerun updates the layer in place
    (second,) = folders(scratch, "xaimed-labels-")
    assert second != first and not first.exists()
    np.testing.assert_array_equal(np.asarray(viewer.layers["Otsu segmentation [lazy ct]"].data),
                                  labels)
    viewer.layers.remove("Otsu segmentation [lazy ct]")
    assert folders(scratch, "xaimed-labels-") == []


def test_a_failed_lazy_job_leaves_no_store(qtbot, viewer_with_lesion, scratch):
    """The bundled classifier refuses a region: the job fails after its folder was made."""
    import dask.array as da

    viewer = viewer_with_lesion
    source = np.asarray(viewer.layers["lesion ct"].data)
    viewer.add_image(da.from_array(source, chunks=(8, -1, -1)), name="lazy ct",
                     scale=(2.0, 1.0, 1.0))
    viewer.add_labels((source > source.mean()).astype(np.uint8), name="region",
                      scale=(2.0, 1.0, 1.0))
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    widget.methods.value = ["saliency"]
    widget.region.value = viewer.layers["region"]
    assert run_and_wait(qtbot, widget) == "failed"
    assert folders(scratch, "xaimed-attribution-") == []

    widget.region.value = None
    assert run_and_wait(qtbot, widget) == "done", widget.job.status.text()
    assert len(folders(scratch, "xaimed-attribution-")) == 1
    viewer.layers.remove("Saliency [lazy ct]")
    assert folders(scratch, "xaimed-attribution-") == []
