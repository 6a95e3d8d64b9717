"""Fixtures the widget tests share."""

import pytest


@pytest.fixture
def viewer_with_lesion(make_napari_viewer):
    """A viewer with the lesion sample, its CT at 2 x 1 x 1 mm."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    viewer.layers["lesion ct"].scale = (2.0, 1.0, 1.0)
    return viewer
