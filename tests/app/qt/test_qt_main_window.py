"""The main window: pages built on first visit say so while they load."""

from PySide6.QtCore import Qt


def test_a_page_built_on_first_visit_shows_a_busy_cue_meanwhile(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QApplication

    from app.qt.pages import metrics

    seen = []
    original = metrics.MetricsPage.__init__

    def building(page, *args) -> None:
        cursor = QApplication.overrideCursor()
        seen.append((cursor is not None and cursor.shape(), window.status.text(),
                     window.nav_buttons["metrics"].isChecked()))
        original(page, *args)

    monkeypatch.setattr(metrics.MetricsPage, "__init__", building)
    window.navigate("metrics")
    assert seen == [(Qt.CursorShape.WaitCursor, "Opening Metrics…", True)]
    assert QApplication.overrideCursor() is None and window.status.text() == ""
    window.navigate("home")
    window.navigate("metrics")  # built once: no cue the second time
    assert len(seen) == 1
