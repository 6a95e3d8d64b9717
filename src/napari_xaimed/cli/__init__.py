"""The command line: ``napari-xaimed demo``, ``check-model``, ``run``, ``register`` and ``rerun``
(one module per command; :mod:`.main` parses the arguments and dispatches)."""
