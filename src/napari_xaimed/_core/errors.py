"""The one exception type users are meant to read."""

from __future__ import annotations

from typing import Any


class XaimedError(ValueError):
    """A problem the user can fix: the message names what is wrong and how to fix it.

    Widgets show it as a napari notification; scripts get it as an ordinary exception.
    It subclasses :class:`ValueError` so code that already guards against bad values catches it.
    """


class JobCancelled(Exception):
    """Raised inside a job when the user cancels it; never shown as an error."""


class UntrustedModelError(XaimedError):
    """A model file names code that loading it would run (a ``"module:Class"``, a MONAI
    ``$`` expression, a ``_target_`` outside ``monai.networks.nets``), and the caller did not
    pass ``trust=True``. Nothing from the file has run.

    Attributes
    ----------
    source : str
        The config that names the code (the JSON beside a state dict, a bundle's config).
    found : list of str
        Each callable or expression that would run, with where the file names it.
    model : str or None
        The model file or bundle folder being loaded, when known.
    config_sha256 : str or None
        The SHA-256 of the config as it was read (its parsed content), when known: passed as
        ``trust=`` to ``load_model``, it lets the code run only while the config is still the
        one whose code was listed here.
    """

    def __init__(self, source: str, found: list[str], model: str | None = None,
                 config_sha256: str | None = None) -> None:
        self.source = str(source)
        self.found = list(found)
        self.model = model
        self.config_sha256 = config_sha256
        listed = "; ".join(self.found)
        super().__init__(
            f"{self.source} names code that loading it would run: {listed}. Nothing from it "
            "has run. If you trust this file, load it with trust=True (load_model(path, "
            "trust=True); --trust on the command line; the widget asks); otherwise use a "
            "network from monai.networks.nets, or one a script registers with "
            "register_network(name, cls).")

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its fields (a Dask worker's refusal reaches the client pickled)
        return (type(self), (self.source, self.found, self.model, self.config_sha256))
