"""How a registration is looked at: fixed and warped blended or as a checkerboard, a quality
table whose rows all show, and, on the samples, the error against the known field.

The checkerboard is a layer of its own, ``"Checkerboard [moving->fixed]"``, made from the fixed
and the warped images (each scaled to [0, 1] by its layer's contrast limits, so two modalities
compare), tiles of ``tile`` voxels alternating between them; the tile-size control remakes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, SpinBox
from qtpy.QtWidgets import QAbstractItemView, QTableWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import provenance
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import add_or_update, image_layer, output_name

#: The sample whose known displacement the error is measured against (sample_data.py).
SAMPLE = "longitudinal_pair"


def checkerboard(first: Any, second: Any, tile: int,
                 limits: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Any:
    """Tiles of ``tile`` voxels alternating between ``first`` and ``second`` (same shape), each
    scaled to [0, 1] by its ``limits`` (low, high) when given. Lazy inputs give a lazy result.

    Raises
    ------
    XaimedError
        When the shapes differ or ``tile`` is below 1.
    """
    if tuple(first.shape) != tuple(second.shape):
        raise XaimedError(f"the checkerboard needs two images of one shape, got {first.shape} "
                          f"and {second.shape}: show the warped image, which lies on the fixed "
                          "grid, against the fixed image.")
    if int(tile) < 1:
        raise XaimedError(f"the checkerboard's tile size must be at least 1 voxel, got {tile}.")
    xp: Any = np
    if is_lazy(first) or is_lazy(second):
        import dask.array as xp  # noqa: N812 (the same calls on dask arrays)

    def scaled(data: Any, lohi: tuple[float, float] | None) -> Any:
        data = data.astype(np.float32)
        if lohi is None:
            return data
        low, high = float(lohi[0]), float(lohi[1])
        return (data - low) / (high - low if high > low else 1.0)

    a, b = scaled(first, None if limits is None else limits[0]), \
        scaled(second, None if limits is None else limits[1])
    n0, n1, n2 = first.shape[-3:]
    t = int(tile)
    parity = ((xp.arange(n0) // t)[:, None, None] + (xp.arange(n1) // t)[None, :, None]
              + (xp.arange(n2) // t)[None, None, :]) % 2 == 1
    return xp.where(parity, b, a)


def truth_source(fixed: Any, moving: Any) -> dict[str, Any] | None:
    """What regenerates the known displacement when fixed and moving are the longitudinal
    sample's current and prior scans (by their provenance, same seed), else None. Cheap: the
    sample is made, and compared with the layers, in the worker (:func:`known_displacement`)."""
    def params(layer: Any) -> dict[str, Any]:
        prov = layer.metadata.get("xaimed", {}) if layer is not None else {}
        return prov.get("params", {}) if prov.get("kind") == "sample" else {}

    f, m = params(fixed), params(moving)
    if f.get("generator") != SAMPLE or m.get("generator") != SAMPLE \
            or f.get("role") != "fixed" or m.get("role") != "moving" \
            or f.get("seed") != m.get("seed") or is_lazy(fixed.data) or is_lazy(moving.data):
        return None
    return {"seed": int(f["seed"]), "fixed": fixed.data, "moving": moving.data,
            "fixed_scale": tuple(fixed.scale[-3:]), "moving_scale": tuple(moving.scale[-3:]),
            "shift": tuple(np.asarray(moving.translate[-3:], float)
                           - np.asarray(fixed.translate[-3:], float))}


def known_displacement(source: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The sample's true displacement in world mm on the fixed grid, and its body mask; None
    when the layers no longer hold the sample's data or voxel size (edited or rescaled).

    The sample's field maps fixed voxel ``i`` to ``i * spacing + u_i`` in its moving scan; with
    the layers translated, the world field is ``u_i + (moving translate - fixed translate)``.
    """
    from napari_xaimed.samples import longitudinal_pair

    sample = longitudinal_pair(seed=source["seed"])
    same = (np.array_equal(np.asarray(source["fixed"]), sample.fixed)
            and np.array_equal(np.asarray(source["moving"]), sample.moving)
            and np.allclose(source["fixed_scale"], sample.spacing)
            and np.allclose(source["moving_scale"], sample.spacing))
    if not same:
        return None
    shift = np.asarray(source["shift"], np.float32)
    return sample.displacement + shift, sample.body


def truth_error(displacement: np.ndarray, truth: np.ndarray, body: np.ndarray
                ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``|u - u_true|`` per voxel (mm) and its mean and 95th percentile inside the body."""
    error = np.linalg.norm(np.asarray(displacement, np.float64) - truth, axis=-1)
    inside = error[body]
    rows = [{"figure": "error vs known field, mean (mm)", "before": float(
                np.linalg.norm(truth, axis=-1)[body].mean()), "after": float(inside.mean())},
            {"figure": "error vs known field, 95th pct (mm)", "before": float(
                np.percentile(np.linalg.norm(truth, axis=-1)[body], 95)),
             "after": float(np.percentile(inside, 95))}]
    return error.astype(np.float32), rows


def fit_rows(table: QTableWidget, most: int = 20) -> None:
    """Make a table tall enough for all its rows (up to ``most``, then it scrolls)."""
    table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    rows = min(table.rowCount(), most)
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(i) for i in range(rows))
    if table.horizontalScrollBar().isVisible() or table.columnCount():
        height += table.horizontalScrollBar().sizeHint().height()
    table.setMinimumHeight(height)


class RegistrationView(Container):
    """Blend and checkerboard toggles, the checkerboard's tile size (voxels)."""

    def __init__(self, viewer: Any) -> None:
        self.blend = CheckBox(label="blend warped over fixed", value=True)
        self.checker = CheckBox(label="checkerboard", value=False)
        self.tile = SpinBox(label="checkerboard tile (voxels)", value=8, min=1, max=256)
        super().__init__(widgets=[self.blend, self.checker, self.tile])
        self.viewer = viewer
        self.fixed: Any = None
        self.warped: Any = None
        self.names: tuple[str, str] = ("", "")
        self.blend.changed.connect(self.apply)
        self.checker.changed.connect(self.apply)
        self.tile.changed.connect(self.apply)
        self.enabled = False

    def show(self, fixed: Any, warped: Any, names: tuple[str, str]) -> None:
        """Show fixed and warped (the default view of a new registration)."""
        self.fixed, self.warped, self.names = fixed, warped, names
        self.enabled = True
        fixed.visible = True
        self.apply()

    @property
    def layer_name(self) -> str:
        return output_name("Checkerboard", *self.names)

    def apply(self, *_: Any) -> None:
        """Blend: warped at half opacity over fixed, else opaque; checkerboard: its layer."""
        self.tile.visible = bool(self.checker.value)
        if self.warped is None or self.warped not in self.viewer.layers \
                or self.fixed not in self.viewer.layers:
            return
        self.warped.opacity = 0.5 if self.blend.value else 1.0
        self.warped.visible = not self.checker.value
        if self.checker.value:
            data = checkerboard(self.fixed.data, self.warped.data, int(self.tile.value),
                                (tuple(self.fixed.contrast_limits),
                                 tuple(self.warped.contrast_limits)))
            add_or_update(self.viewer, image_layer(
                data, self.layer_name, tuple(self.warped.scale[-3:]),
                contrast_limits=(0.0, 1.0), translate=tuple(self.warped.translate[-3:]),
                provenance=provenance("registration checkerboard",
                                      sources=[self.fixed.name, self.warped.name],
                                      params={"tile_voxels": int(self.tile.value)})))
            self.viewer.layers[self.layer_name].visible = True
        elif self.layer_name in self.viewer.layers:
            self.viewer.layers[self.layer_name].visible = False
