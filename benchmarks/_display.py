"""A screen for the benchmarks that run a Qt event loop (imported from their own folder).

Qt's default platform on Linux (xcb) aborts the whole process (SIGABRT, nothing to catch) when
there is no display, losing every row measured before. :func:`ensure_display` therefore gives
Qt one before a ``QApplication`` is made: an Xvfb started through PyVirtualDisplay (what the
test suite's pytest-xvfb uses), or, without Xvfb, Qt's ``offscreen`` platform, which runs the
event loop and timers these benchmarks measure but cannot draw a napari canvas.
"""

from __future__ import annotations

import os
import sys

_started: list = []


def ensure_display() -> str:
    """Make sure Qt can start; returns what it will run on, in words."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return f"Qt platform {os.environ['QT_QPA_PLATFORM']!r} (QT_QPA_PLATFORM)"
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get(
            "WAYLAND_DISPLAY"):
        return "the session's display"
    try:
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1280, 1024))
        display.start()
        _started.append(display)  # kept (and stopped) for the life of the process
        return f"Xvfb {os.environ.get('DISPLAY')} (started by the benchmark: no DISPLAY)"
    except Exception as exc:  # no pyvirtualdisplay or no Xvfb binary
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return (f"Qt offscreen platform (no DISPLAY, and no Xvfb: {exc}); event-loop timings "
                "hold, a canvas would not draw: install Xvfb (apt-get install xvfb) or run "
                "under `xvfb-run -a`")
