"""The one exception type users are meant to read."""


class XaimedError(ValueError):
    """A problem the user can fix: the message names what is wrong and how to fix it.

    Widgets show it as a napari notification; scripts get it as an ordinary exception.
    It subclasses :class:`ValueError` so code that already guards against bad values catches it.
    """


class JobCancelled(Exception):
    """Raised inside a job when the user cancels it; never shown as an error."""
