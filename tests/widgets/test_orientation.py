"""Radiological display of real screenshots (issue 29, item 1 and its acceptance test).

An oblique phantom (voxel axes turned 25 degrees about S) with markers placed in patient
coordinates (see ``tests/_oblique.py``) is opened from NIfTI and from a pydicom-written DICOM
series; the pixels of ``viewer.screenshot(canvas_only=True)`` must show anterior up and the
patient's right on the screen's left (radiological), on the right after the neurological switch.
"""

from __future__ import annotations

import numpy as np
import pytest
from _oblique import ANGLE, oblique_affine, write_dicom, write_nifti

from napari_xaimed.viewer.orientation import orientation_display

# Screenshot intensities (blue channel, gray colormap over 0..1000; the letters are yellow,
# blue ~0): anterior 1000 -> 255, superior 750 -> ~191, right 500 -> ~128, body 100 -> ~25.
CLASSES = {"anterior": (235, 256), "superior": (170, 215), "right": (105, 150),
           "body": (15, 40)}


def centroids(shot: np.ndarray) -> dict[str, np.ndarray]:
    """(row, column) centre of each marker's pixels, as fractions of the canvas size."""
    blue = shot[..., 2].astype(int)
    gray = np.abs(shot[..., 0].astype(int) - blue) < 12  # leaves the yellow letters out
    found = {}
    for name, (low, high) in CLASSES.items():
        rows, cols = np.nonzero(gray & (blue >= low) & (blue < high))
        if rows.size > 20:
            found[name] = np.array([rows.mean() / shot.shape[0], cols.mean() / shot.shape[1]])
    return found


def axial_shot(viewer) -> dict[str, np.ndarray]:
    viewer.dims.set_point(0, 0.0)  # the axial plane S = 0 through both markers
    viewer.reset_view()
    return centroids(viewer.screenshot(canvas_only=True, flash=False))


@pytest.fixture(params=["nifti", "dicom"])
def oblique_viewer(request, make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    if request.param == "nifti":
        path = write_nifti(tmp_path / "oblique.nii.gz")
    else:
        path = write_dicom(tmp_path / "oblique")
    viewer.open(str(path), plugin="napari-xaimed")
    return viewer


def test_oblique_scan_shows_anterior_up_and_right_on_the_left(oblique_viewer):
    viewer = oblique_viewer
    layer = viewer.layers[0]
    assert tuple(layer.contrast_limits) == (0.0, 1000.0)  # the file's window
    # world coordinates are the file's RAS positions, in (S, A, R) order
    affine = oblique_affine()
    for kji in [(0, 0, 0), (6, 20, 31), (12, 47, 5)]:
        ras = affine @ np.array([kji[2], kji[1], kji[0], 1.0])
        np.testing.assert_allclose(layer.data_to_world(kji), ras[2::-1], atol=1e-3)
    spots = axial_shot(viewer)
    body, anterior, right = spots["body"], spots["anterior"], spots["right"]
    # anterior straight above the centre (the 25 degree tilt undone), right straight left
    assert anterior[0] < body[0] - 0.15 and abs(anterior[1] - body[1]) < 0.03
    assert right[1] < body[1] - 0.1 and abs(right[0] - body[0]) < 0.03
    assert orientation_display(viewer).letters == {
        "top": "A", "bottom": "P", "left": "R", "right": "L"}


def test_dicom_stored_the_other_way_round_renders_like_the_nifti(make_napari_viewer, tmp_path):
    """The DICOM series' voxel axes turned 180 degrees from the NIfTI's (its arrays differ:
    rows and columns reversed), the same anatomy: the screenshots agree pixel for pixel."""
    viewer = make_napari_viewer(show=True)
    (nifti,) = viewer.open(str(write_nifti(tmp_path / "oblique.nii.gz")), plugin="napari-xaimed")
    (dicom,) = viewer.open(str(write_dicom(tmp_path / "dicom", oblique_affine(ANGLE + np.pi))),
                           plugin="napari-xaimed")
    assert not np.array_equal(np.asarray(nifti.data), np.asarray(dicom.data))
    viewer.dims.set_point(0, 0.0)
    viewer.reset_view()
    shots = []
    for shown, hidden in ((nifti, dicom), (dicom, nifti)):
        shown.visible, hidden.visible = True, False
        shots.append(viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int))
    differ = np.abs(shots[0] - shots[1]).max(axis=-1) > 8
    assert differ.mean() < 0.002, differ.mean()
    assert (shots[0][..., 2] > 235).sum() > 100  # the anterior marker is there to compare


def test_neurological_switch_puts_the_right_on_the_right(oblique_viewer):
    viewer = oblique_viewer
    dock, widget = viewer.window.add_plugin_dock_widget("napari-xaimed", "Display")
    widget.convention.setCurrentText("neurological")
    spots = axial_shot(viewer)
    assert spots["right"][1] > spots["body"][1] + 0.1
    assert spots["anterior"][0] < spots["body"][0] - 0.15
    assert orientation_display(viewer).letters == {
        "top": "A", "bottom": "P", "left": "L", "right": "R"}
    widget.convention.setCurrentText("radiological")
    assert axial_shot(viewer)["right"][1] < spots["body"][1] - 0.1


def test_letters_are_drawn_at_the_canvas_edges(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(write_nifti(tmp_path / "oblique.nii.gz")), plugin="napari-xaimed")
    viewer.dims.set_point(0, 0.0)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    yellow = (shot[..., 0] > 150) & (shot[..., 1] > 120) & (shot[..., 2] < 60)
    h, w = yellow.shape
    assert yellow[: h // 8, w // 3: 2 * w // 3].sum() > 10  # "A" at the top
    assert yellow[-h // 8:, w // 3: 2 * w // 3].sum() > 10  # "P" at the bottom
    assert yellow[h // 3: 2 * h // 3, : w // 10].sum() > 10  # "R" on the left
    assert yellow[h // 3: 2 * h // 3, -w // 10:].sum() > 10  # "L" on the right
    overlays = viewer.canvas.overlays
    assert [overlays[f"xaimed_orientation_{s}"].text for s in ("top", "left")] == ["A", "R"]


def test_coronal_and_sagittal_views_have_superior_up(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(write_nifti(tmp_path / "oblique.nii.gz", np.diag([3.0, 3.0, 4.0, 1.0])
                                @ _centred())), plugin="napari-xaimed")
    display = orientation_display(viewer)
    viewer.dims.order = (1, 0, 2)  # coronal: S vertical, R horizontal
    assert display.letters == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    viewer.dims.set_point(1, 0.0)
    viewer.reset_view()
    spots = centroids(viewer.screenshot(canvas_only=True, flash=False))
    assert spots["right"][1] < spots["body"][1] - 0.1
    viewer.dims.order = (2, 0, 1)  # sagittal: S vertical, A horizontal
    assert display.letters == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    viewer.dims.set_point(2, 0.0)
    viewer.reset_view()
    spots = centroids(viewer.screenshot(canvas_only=True, flash=False))
    assert spots["superior"][0] < spots["body"][0] - 0.1
    assert spots["anterior"][1] < spots["body"][1] - 0.1


def test_3d_view_starts_from_the_front(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(write_nifti(tmp_path / "oblique.nii.gz")), plugin="napari-xaimed")
    viewer.dims.ndisplay = 3
    spots = centroids(viewer.screenshot(canvas_only=True, flash=False))
    assert spots["superior"][0] < spots["anterior"][0] - 0.05  # superior up
    assert spots["right"][1] < spots["anterior"][1] - 0.05  # the patient's right on the left
    assert orientation_display(viewer).letters == {
        "top": "S", "bottom": "I", "left": "R", "right": "L"}


def _centred() -> np.ndarray:
    """Voxel-to-index part of an axis-aligned affine centred on the phantom (unit zooms)."""
    from _oblique import SHAPE

    affine = np.eye(4)
    affine[:3, 3] = -(np.array(SHAPE[::-1]) - 1) / 2
    return affine


def test_display_dock_sets_presets_on_the_selected_image(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(write_nifti(tmp_path / "oblique.nii.gz")), plugin="napari-xaimed")
    _, widget = viewer.window.add_plugin_dock_widget("napari-xaimed", "Display")
    viewer.layers.selection.active = layer
    widget.buttons["bone"].click()
    assert tuple(layer.contrast_limits) == (-500.0, 1300.0)  # 400 -/+ 1800 / 2
    widget.buttons["file window"].click()
    assert tuple(layer.contrast_limits) == (0.0, 1000.0)  # the file's cal_min, cal_max
    viewer.layers.selection.active = None
    widget.buttons["lung"].click()
    assert "Select an Image layer" in widget.status.text()
