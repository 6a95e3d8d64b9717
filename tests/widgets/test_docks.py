"""Docks that fit on a screen (issue 29 item 6): with every napari-xaimed widget docked the
main window fits 1920x1080, the explanation check's plot and table keep a usable height, and
a long info line does not widen a dock."""

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QDockWidget

SCREEN = (1920, 1080)
#: The widest a dock may grow from its own content: a long info line made it 1,150 px.
MAX_DOCK_WIDTH = 700
USABLE = 150  # px: a plot or a table's rows below this cannot be read


def xaimed_widget_names():
    """Every widget napari-xaimed's manifest contributes (the napari.yaml list)."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("napari-xaimed")
    return [w.display_name for w in manifest.contributions.widgets]


def settle(qtbot):
    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(50)


@pytest.fixture
def screen():
    size = QApplication.primaryScreen().size()
    # pytest-xvfb's display, set in pyproject.toml (xvfb_width, xvfb_height)
    assert (size.width(), size.height()) == SCREEN
    return size


@pytest.fixture
def docked(make_napari_viewer, qtbot, screen):
    """A shown viewer with the lesion sample and every napari-xaimed widget docked the way
    the Plugins menu docks them."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-xaimed", "lesion")
    names = xaimed_widget_names()
    assert len(names) >= 7
    docks = {name: viewer.window.add_plugin_dock_widget("napari-xaimed", name)
             for name in names}
    settle(qtbot)
    return viewer, docks


def fits(window):
    size, least = window.size(), window.minimumSizeHint()
    return (size.width() <= SCREEN[0] and size.height() <= SCREEN[1]
            and least.width() <= SCREEN[0] and least.height() <= SCREEN[1])


def test_every_widget_docked_fits_a_full_hd_screen(docked, qtbot, tmp_path):
    viewer, docks = docked
    window = viewer.window._qt_window
    assert fits(window), (window.size(), window.minimumSizeHint())
    window.showMaximized()
    settle(qtbot)
    assert fits(window), (window.size(), window.minimumSizeHint())
    dock, widget = docks["Explanation check"]
    dock.raise_()
    settle(qtbot)
    assert widget.plot.canvas.height() >= USABLE
    assert widget.table.table.height() >= USABLE
    # the dock shows a usable part of its form, not a sliver
    assert widget.scroll.viewport().height() >= 3 * USABLE
    shot = window.grab()
    assert (shot.width(), shot.height()) == (window.width(), window.height())
    shot.save(str(tmp_path / "all_docks.png"))


def test_napari_xaimed_docks_share_one_tab_group(docked):
    viewer, docks = docked
    window = viewer.window._qt_window
    first, *rest = [dock for dock, _ in docks.values()]
    tabbed = set(window.tabifiedDockWidgets(first))
    assert all(dock in tabbed for dock in rest)


def test_a_long_info_line_wraps_instead_of_widening_the_dock(docked, qtbot):
    viewer, docks = docked
    window = viewer.window._qt_window
    dock, widget = docks["Explanation check"]
    dock.raise_()
    settle(qtbot)
    width = dock.width()
    widget.info.value = "a long info line " * 40  # 680 characters, no line break
    settle(qtbot)
    assert dock.width() == width <= MAX_DOCK_WIDTH
    # and the content still fits the dock's width (no sideways scrolling)
    assert widget.scroll.horizontalScrollBar().maximum() == 0
    widget.job.status.setText("a long status line " * 40)
    settle(qtbot)
    assert dock.width() == width and widget.scroll.horizontalScrollBar().maximum() == 0
    label = widget.info.native
    assert label.height() > 2 * label.fontMetrics().height()
    assert label.height() >= label.heightForWidth(label.width())  # every wrapped line shows
    assert fits(window)


def test_docks_split_one_under_the_other_keep_their_plots_usable(make_napari_viewer, qtbot,
                                                                  screen):
    """Docks a user drags out of the tab group, one under the other: each scrolls, its plot
    and table keep their height, and the window does not grow."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-xaimed", "lesion")
    window = viewer.window._qt_window
    docks = [viewer.window.add_plugin_dock_widget("napari-xaimed", name)
             for name in ("Panoptic evaluation", "Registration", "Explanation check")]
    for dock, _ in docks:  # out of the tab group, one under the other
        window.removeDockWidget(dock)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock,
                             Qt.Orientation.Vertical)
        dock.show()
    settle(qtbot)
    assert not any(window.tabifiedDockWidgets(dock) for dock, _ in docks)
    assert fits(window), (window.size(), window.minimumSizeHint())
    _, widget = docks[-1]
    assert widget.plot.canvas.height() >= USABLE
    assert widget.table.table.height() >= USABLE
    assert isinstance(widget.parent(), QDockWidget)
    np.testing.assert_array_less(0, widget.scroll.verticalScrollBar().maximum())
