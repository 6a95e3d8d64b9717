"""napari-xaimed: explainable AI for 3D medical imaging in napari.

The package root imports nothing heavy: ``import napari_xaimed`` stays cheap and never pulls in
napari or Qt. The capabilities live in the subpackages (``io``, ``samples``, ``segmentation``,
``evaluation``, ``registration``, ``attribution``), each usable from scripts without a viewer.
"""

from napari_xaimed._core.errors import XaimedError

__version__ = "0.1.0"

__all__ = ["XaimedError", "__version__"]
