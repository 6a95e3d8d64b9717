"""Training of the bundled networks on the samples (``scripts/train_lesion_*.py`` run it).

It sits above the samples, models and segmentation, so the networks in :mod:`napari_xaimed.models`
need none of them.
"""
