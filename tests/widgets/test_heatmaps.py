"""Heatmaps leave the anatomy visible: real Xvfb screenshots whose pixels are checked.

The reference is the screenshot of the same view without the heatmap layer: where the map is
zero the anatomy's pixels must be exactly those, where it is not they must change, with the
sign's colour (red above the centre, blue below).
"""

import numpy as np
import pytest

from napari_xaimed.viewer.heatmaps import is_heatmap, show_heatmaps
from napari_xaimed.viewer.layers import heatmap_layer, image_layer

SHAPE = (8, 64, 64)


def anatomy() -> np.ndarray:
    """A grey ramp along x (so a wash-out anywhere changes pixel values)."""
    ramp = np.linspace(0.2, 0.8, SHAPE[2], dtype=np.float32)
    return np.broadcast_to(ramp, SHAPE).copy()


def signed_map() -> np.ndarray:
    """Zero in the middle columns, negative on the left, positive on the right."""
    data = np.zeros(SHAPE, np.float32)
    data[..., :16] = -1.0
    data[..., 48:] = 1.0
    return data


def shot(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


def with_and_without(viewer, heatmap) -> tuple[np.ndarray, np.ndarray]:
    """Screenshots with the heatmap and, once it is removed, without it (same canvas size)."""
    (layer,) = show_heatmaps(viewer, [heatmap])
    assert layer.visible
    present = shot(viewer)
    viewer.layers.remove(layer)
    absent = shot(viewer)
    assert present.shape == absent.shape
    return present, absent


def image_region(image: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (rows, columns) of the non-background pixels of a screenshot."""
    drawn = np.nonzero(image.sum(-1) > 0)
    return drawn[0].min(), drawn[0].max() + 1, drawn[1].min(), drawn[1].max() + 1


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=True)  # shown: screenshots render


def split(image: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """The screenshot's drawn image cut into the map's three column bands (with a margin)."""
    r0, r1, c0, c1 = box
    width = (c1 - c0) / SHAPE[2]
    rows = slice(r0 + (r1 - r0) // 3, r1 - (r1 - r0) // 3)

    def band(x0: int, x1: int) -> np.ndarray:
        return image[rows, int(c0 + (x0 + 2) * width):int(c0 + (x1 - 2) * width)]

    return {"negative": band(0, 16), "zero": band(16, 48), "positive": band(48, 64)}


def test_a_diverging_map_leaves_the_anatomy_unchanged_where_it_is_zero(viewer):
    data, kwargs, _ = image_layer(anatomy(), "ct", (1.0, 1.0, 1.0), contrast_limits=(0, 1))
    viewer.add_image(data, **kwargs)
    viewer.dims.set_point(0, SHAPE[0] // 2)
    after, before = with_and_without(viewer, heatmap_layer(signed_map(), "IG [ct]",
                                                                (1, 1, 1)))
    box = image_region(before)
    b, a = split(before, box), split(after, box)
    np.testing.assert_array_equal(a["zero"], b["zero"])  # anatomy untouched where the map is 0
    for sign, (more, less) in {"positive": (0, 2), "negative": (2, 0)}.items():
        change = a[sign] - b[sign]
        assert np.abs(change).max() > 40, sign  # the map shows where it is not zero
        # ... in its sign's colour: red above zero, blue below
        assert (change[..., more] > change[..., less] + 40).all(), sign


def test_a_sequential_map_is_transparent_at_zero(viewer):
    data, kwargs, _ = image_layer(anatomy(), "ct", (1.0, 1.0, 1.0), contrast_limits=(0, 1))
    viewer.add_image(data, **kwargs)
    viewer.dims.set_point(0, SHAPE[0] // 2)
    after, before = with_and_without(viewer, heatmap_layer(np.abs(signed_map()),
                                                                "Saliency [ct]", (1, 1, 1)))
    box = image_region(before)
    b, a = split(before, box), split(after, box)
    np.testing.assert_array_equal(a["zero"], b["zero"])
    assert np.abs(a["positive"] - b["positive"]).max() > 40


def test_negative_relevance_stays_visible_in_3d(viewer):
    """A maximum intensity projection keeps the largest value on a ray: 0 where a ray crosses
    only negative relevance and zeros. The map must still draw the negative blob (blue)."""
    data = np.zeros((32, 32, 32), np.float32)
    data[12:20, 12:20, 12:20] = -1.0
    data[0, 0, 0] = 1.0  # a signed map (limits -1..1)
    viewer.dims.ndisplay = 3
    image, empty = with_and_without(viewer, heatmap_layer(data, "IG [ct]", (1, 1, 1)))
    centre = image[image.shape[0] // 2 - 3:image.shape[0] // 2 + 3,
                   image.shape[1] // 2 - 3:image.shape[1] // 2 + 3]
    background = empty[empty.shape[0] // 2, empty.shape[1] // 2]
    assert (centre[..., 2] > centre[..., 0] + 30).all(), centre[0, 0]  # blue shows
    assert (centre[..., 2] > background[2] + 30).all()


def test_only_the_newest_map_shows_and_each_has_a_titled_colour_bar(viewer):
    data, kwargs, _ = image_layer(anatomy(), "ct", (1.0, 1.0, 1.0))
    viewer.add_image(data, **kwargs)
    first = show_heatmaps(viewer, [heatmap_layer(signed_map(), "Saliency [ct]", (1, 1, 1),
                                                 values="relevance (score units)")])
    run = show_heatmaps(viewer, [
        heatmap_layer(signed_map(), "Integrated Gradients [ct]", (1, 1, 1)),
        heatmap_layer(np.abs(signed_map()), "Grad-CAM [ct]", (1, 1, 1))])
    names = [layer.name for layer in viewer.layers]
    # every method sits beside the others under its own name; none is deleted
    assert names == ["ct", "Saliency [ct]", "Integrated Gradients [ct]", "Grad-CAM [ct]"]
    assert [layer.visible for layer in viewer.layers] == [True, False, False, True]
    assert all(is_heatmap(layer) and layer.colorbar.visible for layer in first + run)
    titles = {k: v for k, v in viewer.canvas.overlays.items() if "heatmap title" in k}
    assert len(titles) == 3
    shown = [overlay.text for overlay in titles.values() if overlay.visible]
    assert shown == ["Grad-CAM [ct]\nfrom 0 (transparent) up"]
    first[0].visible = True  # the title follows the layer
    assert sorted(o.text for o in titles.values() if o.visible)[-1] == \
        "Saliency [ct]\nrelevance (score units)"
    viewer.layers.remove(first[0])
    assert len([k for k in viewer.canvas.overlays if "heatmap title" in k]) == 2


def test_sample_heatmaps_get_their_colour_bar_once_watched(make_napari_viewer):
    from napari_xaimed.viewer.heatmaps import watch

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    truth = viewer.layers["true displacement mm [prior->current]"]
    assert not truth.colorbar.visible  # napari's default
    watch(viewer)  # what the attribution, registration and longitudinal docks do on opening
    assert truth.colorbar.visible and not truth.visible

    def titles() -> list[str]:
        return [o.text for k, o in viewer.canvas.overlays.items()
                if "heatmap title" in k and o.visible]

    assert titles() == []  # hidden with its layer
    truth.visible = True
    assert titles() == [f"{truth.name}\nfrom 0 (transparent) up"]
    data, kwargs, _ = heatmap_layer(signed_map(), "later [ct]", (1, 1, 1))
    later = viewer.add_image(data, **kwargs)  # added by any means: decorated too
    assert later.colorbar.visible and len(titles()) == 2


def test_a_run_hides_only_the_heatmaps_over_its_own_image(make_napari_viewer):
    """An attribution run on "ct" hides the older maps over "ct" (the model's foreground
    probability too: stacked they wash the CT out) but not the map over another image."""
    from napari_xaimed._core.provenance import provenance

    viewer = make_napari_viewer()

    def heat(name: str, *sources: str):
        return heatmap_layer(np.abs(signed_map()), name, (1, 1, 1),
                             provenance=provenance("test", sources=sources))

    (mri,) = show_heatmaps(viewer, [heat("Saliency [mri]", "mri")])
    (probability,) = show_heatmaps(viewer, [heat("Model foreground probability [ct]", "ct")])
    (change,) = show_heatmaps(viewer, [heat("Saliency change [prior->ct]", "prior", "ct")])
    assert mri.visible and not probability.visible and change.visible
    (saliency,) = show_heatmaps(viewer, [heat("Saliency [ct]", "ct")])
    assert saliency.visible and mri.visible  # another image's map keeps showing
    assert not probability.visible and not change.visible
    # without provenance the source comes from the name's brackets
    (other,) = show_heatmaps(viewer, [heatmap_layer(signed_map(), "Grad-CAM [mri]", (1, 1, 1))])
    assert other.visible and not mri.visible and saliency.visible


def test_the_source_of_a_map_without_provenance_comes_from_its_name(make_napari_viewer):
    from napari_xaimed.viewer.heatmaps import sources_of

    viewer = make_napari_viewer()
    names = {"Saliency [ct]": {"ct"}, "Saliency [ct] [1]": {"ct"},  # napari's numbering
             "Change [prior->current]": {"prior", "current"}, "MNI152 GM probability": set()}
    for name, expected in names.items():
        assert sources_of(viewer.add_image(np.zeros(SHAPE), name=name)) == expected
