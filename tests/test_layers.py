"""Results become layers the same way everywhere (DESIGN.md conventions)."""

import json

import numpy as np

from napari_xaimed._core.provenance import provenance
from napari_xaimed.viewer.heatmaps import DIVERGING, SEQUENTIAL
from napari_xaimed.viewer.layers import heatmap_layer, image_layer, labels_layer, output_name


def test_heatmaps_follow_the_colour_conventions():
    rng = np.random.default_rng(0)
    signed = rng.normal(size=(4, 5, 6))
    _, kw, kind = heatmap_layer(signed, "IG [ct]", (2.0, 1.0, 1.0))
    assert kind == "image" and kw["colormap"].name == DIVERGING
    lo, hi = kw["contrast_limits"]
    assert lo == -hi and hi > 0
    # blue below, red above, clear at the centre (bwr was opaque white there)
    rgba = kw["colormap"].map(np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(rgba[:, 3], [1.0, 0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(rgba[[0, -1], :3], [[0, 0, 1], [1, 0, 0]])
    assert kw["blending"] == "translucent" and kw["rendering"] == "translucent"
    _, kw, _ = heatmap_layer(np.abs(signed), "Saliency [ct]", (2.0, 1.0, 1.0))
    assert kw["colormap"].name == SEQUENTIAL and kw["contrast_limits"][0] == 0
    assert kw["colormap"].map(np.array([0.0]))[0, 3] == 0  # clear at zero
    assert kw["blending"] == "translucent" and 0.5 <= kw["opacity"] <= 0.7


def test_geometry_and_provenance():
    prov = provenance("segmentation", sources=["ct"], params={"steps": np.int32(3), "r": (1, 2)},
                      seconds=1.23456, extra=float("inf"))
    json.dumps(prov)
    assert prov["params"] == {"steps": 3, "r": [1, 2]} and prov["seconds"] == 1.2346
    _, kw, kind = labels_layer(np.zeros((3, 4, 5), np.uint8), output_name("Segmentation", "ct"),
                               (2.5, 0.8, 0.7), translate=(1, 2, 3), provenance=prov)
    assert kind == "labels" and kw["name"] == "Segmentation [ct]"
    assert kw["scale"] == (2.5, 0.8, 0.7) and kw["translate"] == (1.0, 2.0, 3.0)
    assert kw["units"] == ("mm",) * 3 and kw["axis_labels"] == ("z", "y", "x")
    assert kw["metadata"]["xaimed"] is prov
    _, kw, _ = image_layer(np.zeros((2, 3, 4, 5)), "dwi", (1.0, 1.0, 1.0))
    assert kw["scale"] == (1.0, 1.0, 1.0, 1.0) and kw["axis_labels"][-3:] == ("z", "y", "x")
    assert output_name("Jacobian", "prior", "current") == "Jacobian [prior->current]"
