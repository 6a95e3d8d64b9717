"""How a heatmap layer looks: colormaps transparent at zero and the layer settings that use them.

Diverging maps take :func:`diverging_colormap` (blue below the centre, red above, alpha 0 at
the centre rising linearly to 1 at both limits) and sequential maps :func:`sequential_colormap`
(inferno with alpha 0 at zero), both with translucent blending, so a voxel where the map is zero
leaves the image under it exactly as it was. In 3D a signed map renders ``"translucent"``
(alpha compositing along the ray) rather than napari's default maximum intensity projection,
which keeps only the largest value on a ray and so hides negative relevance, however strong.
napari is imported lazily so this module stays importable without it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

#: Metadata key of a heatmap layer: what its values are, with their unit (the colour bar's title).
VALUES = "values"
#: Names of the colormaps (as napari lists them).
DIVERGING = "bwr (0 clear)"
SEQUENTIAL = "inferno (0 clear)"


@cache
def diverging_colormap() -> Any:
    """Blue (below the centre) and red (above) with alpha 0 at the centre, 1 at both ends."""
    from napari.utils.colormaps import Colormap

    colors = [[0, 0, 1, 1], [0, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 1]]
    return Colormap(colors=colors, controls=[0.0, 0.5, 0.5, 1.0], name=DIVERGING,
                    display_name=DIVERGING)


@cache
def sequential_colormap() -> Any:
    """napari's ``inferno`` with alpha rising from 0 at zero to 1 at half the range."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    t = np.linspace(0.0, 1.0, 33)
    rgba = np.asarray(ensure_colormap("inferno").map(t), dtype=np.float64)
    rgba[:, 3] = np.clip(2.0 * t, 0.0, 1.0)
    return Colormap(colors=rgba, controls=t, name=SEQUENTIAL, display_name=SEQUENTIAL)


def heatmap_style(signed: bool) -> dict[str, Any]:
    """Layer keyword arguments that draw a signed or unsigned map over an image."""
    if signed:
        return {"colormap": diverging_colormap(), "blending": "translucent",
                "rendering": "translucent"}
    return {"colormap": sequential_colormap(), "blending": "translucent"}
