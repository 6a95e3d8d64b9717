"""Asking before a model file's own code runs.

Loading a file that names code (a ``"module:Class"`` network, a bundle's ``$`` expressions or
foreign ``_target_``) is refused with an :class:`~napari_xaimed._core.errors.UntrustedModelError`
listing each callable and expression. The job panel then asks with :func:`ask_trust`, a dialog
that shows that list; Yes loads the file again trusting the config as the dialog showed it
(``trust=`` its SHA-256: a config edited after the dialog is refused and asked about again),
No leaves everything as it was.

:func:`confirm` is the one place the answer comes from: tests replace it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import UntrustedModelError

TITLE = "Run code from the model file?"


def trust_question(error: UntrustedModelError) -> str:
    """The dialog's text: the file and exactly which callables and expressions would run."""
    items = "\n".join(f"  • {item}" for item in error.found)
    return (f"{error.source} names code that loading it runs:\n\n{items}\n\n"
            "That code can do anything your account can do. Answer Yes only if you trust "
            "where this file came from: it is then loaded with trust=True. No loads nothing.")


def trust_dialog(parent: Any, text: str) -> Any:
    """The question as a warning box with Yes and No (No the default)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(TITLE)
    box.setText(text)
    box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    return box


def confirm(parent: Any, text: str) -> bool:
    """Ask, modal; True for Yes."""
    from qtpy.QtWidgets import QMessageBox

    return trust_dialog(parent, text).exec() == QMessageBox.StandardButton.Yes


def ask_trust(parent: Any, error: UntrustedModelError) -> bool:
    """Whether the user lets the code ``error`` lists run."""
    return confirm(parent, trust_question(error))


class TrustedModels:
    """The model files a user said Yes for in this widget, each with the SHA-256 of the
    config whose code the dialog listed: that config's code runs, and an edited config is
    refused and asked about again."""

    def __init__(self) -> None:
        self._digests: dict[str, str | bool] = {}

    @staticmethod
    def _key(source: Any) -> str | None:
        if source is None or not Path(str(source)).exists():
            return None
        return str(Path(str(source)).resolve())

    def trusts(self, source: Any) -> bool | str:
        """What to pass ``load_model`` as ``trust`` for ``source``: the SHA-256 of the config
        the user said Yes for (its code runs only while the config is that one), or False."""
        key = self._key(source)
        return self._digests.get(key, False) if key is not None else False

    def add(self, source: Any, config_sha256: str | None) -> None:
        key = self._key(source)
        if key is not None:
            # no digest (an nnU-Net folder's checkpoint or plans): the folder as it is
            self._digests[key] = config_sha256 or True

    def retry(self, run: Any) -> Any:
        """What the job panel calls on Yes with the refusal: trust its model file's config as
        the dialog showed it and ``run`` again."""

        def again(error: UntrustedModelError) -> None:
            self.add(error.model, error.config_sha256)
            run()

        return again
