"""Where :class:`XaimedError` was imported from before issue 28; the errors live in
:mod:`napari_xaimed._core.errors` (``XaimedError`` is also exported by :mod:`napari_xaimed`)."""

from napari_xaimed._core.errors import JobCancelled, UntrustedModelError, XaimedError

__all__ = ["JobCancelled", "UntrustedModelError", "XaimedError"]
