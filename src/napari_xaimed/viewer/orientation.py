"""Patient orientation on screen: radiological (or neurological) views with orientation letters.

**World frame.** Every layer of this plugin lives in patient coordinates: napari's world axes
``(z, y, x)`` are ``(S, A, R)`` in mm, the RAS frame of :attr:`napari_xaimed.io.Volume.affine`
in numpy's axis order. A layer keeps its voxels as stored (no copy, no resampling): ``scale`` is
the spacing, ``translate`` the origin along the voxel axes (:func:`napari_xaimed.io.grid_translate`)
and ``affine`` the direction cosines (:func:`layer_affine`), so ``layer.data_to_world`` is the
file's voxel-to-RAS matrix exactly, for any direction matrix, oblique ones included. Outputs
computed from a layer take its ``affine`` (:func:`napari_xaimed.viewer.layers.add_or_update`).

**Views.** Only the camera changes (``viewer.scene.camera.orientation``), never the data or the
world coordinates. Radiological convention: axial slices with anterior up and the patient's
right on the screen's left (seen from the feet), coronal with superior up and right on the left,
sagittal with superior up and anterior on the left. Neurological puts the patient's right on
the right (axial, coronal). The 3D view starts from the front (superior up, the patient's right
on the screen's left, never mirrored). Letters (R/L, A/P, S/I) at the canvas edges follow the
displayed axes and the 3D camera.

napari draws a 2D slice of an oblique layer on its own voxel plane: a rotation within the
displayed plane is drawn exactly, one across it is not (napari warns "Non-orthogonal slicing"),
so cut across an oblique acquisition only after resampling it.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

RADIOLOGICAL = "radiological"
NEUROLOGICAL = "neurological"
CONVENTIONS = (RADIOLOGICAL, NEUROLOGICAL)
#: Letters of the world axes ``(z, y, x)`` = ``(S, A, R)``: toward increasing, decreasing values.
POSITIVE = ("S", "A", "R")
NEGATIVE = ("I", "P", "L")
#: Canvas positions of the letters, by screen side.
LETTER_POSITIONS = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left",
                    "right": "middle_right"}
OVERLAY_PREFIX = "xaimed_orientation_"
#: 3D start: the camera's axis orientation (never mirrored) and view from the front.
ORIENTATION_3D = ("away", "up", "left")


def direction_matrix(affine: Any) -> np.ndarray:
    """The 3x3 direction cosines of a NIfTI-convention affine (voxel ``(i, j, k)`` = ``(x, y,
    z)`` to RAS) in napari's order: voxel ``(z, y, x)`` to world ``(S, A, R)``."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    unit = linear / np.linalg.norm(linear, axis=0)
    return np.ascontiguousarray(unit[::-1, ::-1])


def layer_affine(affine: Any, ndim: int = 3) -> np.ndarray:
    """The napari ``affine`` (``ndim + 1`` square) of a layer whose last three axes are a
    volume with this RAS affine; leading axes (channel, time) unchanged.

    With ``scale`` = spacing and ``translate`` = :func:`napari_xaimed.io.grid_translate`,
    the layer's voxel-to-world transform is the file's affine in ``(z, y, x)`` order.
    """
    matrix = np.eye(ndim + 1)
    matrix[ndim - 3:ndim, ndim - 3:ndim] = direction_matrix(affine)
    return matrix


def screen_directions(vertical: int, horizontal: int, convention: str = RADIOLOGICAL
                      ) -> tuple[str, str]:
    """napari's ``orientation2d`` (vertical, horizontal) for displayed world axes (0 = S,
    1 = A, 2 = R; anything else is not anatomical and keeps napari's default)."""
    check_convention(convention)
    up = "up" if vertical in (0, 1, 2) else "down"
    if horizontal == 2:
        side = "left" if convention == RADIOLOGICAL else "right"
    elif horizontal == 1:
        side = "left"  # sagittal: anterior on the left in both conventions
    else:
        side = "right"
    return up, side


def letters_2d(vertical: int, horizontal: int, orientation2d: tuple[str, str]
               ) -> dict[str, str]:
    """The letters at the top, bottom, left and right of a 2D view of world axes ``vertical``
    and ``horizontal`` drawn with napari's ``orientation2d``; '' for a non-anatomical axis."""
    def pair(axis: int) -> tuple[str, str]:
        return (POSITIVE[axis], NEGATIVE[axis]) if axis in (0, 1, 2) else ("", "")

    pos, neg = pair(vertical)
    top, bottom = (pos, neg) if str(orientation2d[0]) == "up" else (neg, pos)
    pos, neg = pair(horizontal)
    left, right = (pos, neg) if str(orientation2d[1]) == "left" else (neg, pos)
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def letters_3d(axes: tuple[int, int, int], view: Any, up: Any, handedness: str
               ) -> dict[str, str]:
    """The letters of a 3D view: the anatomical direction nearest each screen side.

    ``view`` and ``up`` are the camera's directions in the displayed world axes ``axes``;
    ``handedness`` is napari's (``camera.handedness``): screen right is ``up x view`` in a
    'left'-handed orientation and ``view x up`` in a 'right'-handed one.
    """
    view, up = np.asarray(view, dtype=float), np.asarray(up, dtype=float)
    right = np.cross(up, view) if str(handedness) == "left" else np.cross(view, up)

    def letter(direction: np.ndarray) -> str:
        k = int(np.argmax(np.abs(direction)))
        axis = axes[k]
        if axis not in (0, 1, 2) or abs(direction[k]) < 1e-6:
            return ""
        return POSITIVE[axis] if direction[k] > 0 else NEGATIVE[axis]

    return {"top": letter(up), "bottom": letter(-up), "left": letter(-right),
            "right": letter(right)}


def check_convention(convention: str) -> None:
    """Raise a :class:`~napari_xaimed.XaimedError` for an unknown convention."""
    if convention not in CONVENTIONS:
        from napari_xaimed._core.errors import XaimedError

        raise XaimedError(f"Unknown display convention {convention!r}: use 'radiological' or "
                          "'neurological'.")


class OrientationDisplay:
    """Keeps a viewer's camera in a display convention and its orientation letters current.

    Use :func:`orientation_display` (one per viewer) rather than this class directly.
    """

    def __init__(self, viewer: Any, convention: str = RADIOLOGICAL) -> None:
        check_convention(convention)
        self._viewer = weakref.ref(viewer)
        self.convention = convention
        self.letters: dict[str, str] = {}
        camera = viewer.scene.camera
        viewer.dims.events.order.connect(self._on_axes, position="last")
        viewer.dims.events.ndisplay.connect(self._on_ndisplay, position="last")
        viewer.layers.events.inserted.connect(self._on_axes, position="last")
        camera.events.orientation.connect(self._update_letters, position="last")
        camera.events.angles.connect(self._update_letters, position="last")
        self.apply()

    @property
    def viewer(self) -> Any:
        return self._viewer()

    def set_convention(self, convention: str) -> None:
        """Switch between ``"radiological"`` and ``"neurological"`` and redraw."""
        check_convention(convention)
        self.convention = convention
        self.apply()

    def _spatial(self, axes: Any) -> list[int]:
        """World axes as anatomical indices (0 = S, 1 = A, 2 = R; negative: not spatial)."""
        offset = self.viewer.dims.ndim - 3
        return [int(a) - offset for a in axes]

    def apply(self) -> None:
        """Set the camera for the displayed axes (2D) or the front view (3D)."""
        viewer = self.viewer
        if viewer is None:
            return
        camera = viewer.scene.camera
        displayed = self._spatial(viewer.dims.displayed)
        if viewer.dims.ndisplay == 2:
            camera.orientation2d = screen_directions(*displayed[-2:], self.convention)
        else:
            self._front_view(displayed)
        self._update_letters()

    def _front_view(self, displayed: list[int]) -> None:
        camera = self.viewer.scene.camera
        camera.orientation = ORIENTATION_3D
        if sorted(displayed) != [0, 1, 2]:
            return
        view = [-1.0 if axis == 1 else 0.0 for axis in displayed]  # toward posterior
        up = [1.0 if axis == 0 else 0.0 for axis in displayed]  # superior up
        camera.set_view_direction(tuple(view), tuple(up))

    def _on_axes(self, event: Any = None) -> None:
        if self.viewer is not None and self.viewer.dims.ndisplay == 2:
            self.apply()
        else:
            self._update_letters()

    def _on_ndisplay(self, event: Any = None) -> None:
        self.apply()

    def _update_letters(self, event: Any = None) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        camera = viewer.scene.camera
        displayed = self._spatial(viewer.dims.displayed)
        if viewer.dims.ndisplay == 2:
            letters = letters_2d(*displayed[-2:], tuple(camera.orientation2d))
        else:
            letters = letters_3d(tuple(displayed), camera.view_direction, camera.up_direction,
                                 str(camera.handedness))
        self.letters = letters
        _draw_letters(viewer, letters)


def _draw_letters(viewer: Any, letters: dict[str, str]) -> None:
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    for side, position in LETTER_POSITIONS.items():
        key = OVERLAY_PREFIX + side
        text = letters.get(side, "")
        if key not in overlays:
            overlays[key] = TextOverlay(text=text, position=position, visible=True,
                                        font_size=14, color="#ffd700")
        else:
            overlays[key].text = text


_DISPLAYS: weakref.WeakKeyDictionary[Any, OrientationDisplay] = weakref.WeakKeyDictionary()


def orientation_display(viewer: Any, convention: str | None = None) -> OrientationDisplay:
    """The viewer's :class:`OrientationDisplay` (created radiological on first use); with
    ``convention``, switched to it."""
    display = _DISPLAYS.get(viewer)
    if display is None:
        display = OrientationDisplay(viewer, convention or RADIOLOGICAL)
        _DISPLAYS[viewer] = display
    elif convention is not None:
        display.set_convention(convention)
    return display


def display_current_viewer() -> None:
    """Put the current napari viewer (if any) under :func:`orientation_display`: what the
    reader and the sample data call before napari adds their layers."""
    try:
        import napari
    except ImportError:  # the reader used without napari (plain npe2)
        return
    viewer = napari.current_viewer()
    if viewer is not None:
        orientation_display(viewer)
