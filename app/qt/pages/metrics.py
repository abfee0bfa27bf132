"""Metrics dashboard: the plan the federation follows, every site's Dice per federated round (from the
history the server shares), this site's local validation curve, the privacy (epsilon) each DP site has
spent when any site trains with DP, a table of all records, PNG and CSV export."""

from __future__ import annotations

from pathlib import Path

from matplotlib.image import imsave
from matplotlib.ticker import MaxNLocator
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)

from app.models.colors import label_color
from app.qt.dialogs import show_error
from app.qt.widgets.common import Card, Page, PathField, button, hint
from app.qt.widgets.plots import Canvas, rgb_to_mpl, stacked_image, style_axes, style_legend
from app.services.workbench import Workbench
from segmentation.events import EventTail

FOLLOW_MS = 1000


class MetricsPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Metrics", "How good the model is at every site: each site's Dice per federated "
                         "round, as the server shares it, next to this site's own validation curve.")
        self.workbench, self.shell = workbench, shell
        self.metrics = workbench.federation_metrics
        self.tail: EventTail | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(FOLLOW_MS)
        self.timer.timeout.connect(self.follow)
        top = QHBoxLayout()
        self.source = PathField("file", "Choose an events file", "Events (*.jsonl);;All files (*)",
                                placeholder="events.jsonl of a server run folder or a site")
        top.addWidget(self.source, 1)
        load = button("Follow")
        load.setToolTip("Read the file and keep reading what is added to it")
        load.clicked.connect(lambda: self.follow_file(self.source.path))
        top.addWidget(load)
        self.export_png = button("Export PNG…", "export")
        self.export_png.clicked.connect(self.choose_png)
        self.export_csv = button("Export CSV…", "export")
        self.export_csv.clicked.connect(self.choose_csv)
        top.addWidget(self.export_png)
        top.addWidget(self.export_csv)
        self.content.addLayout(top)
        self.plan_line = hint("")
        self.plan_line.setToolTip("The plan every site trains and predicts with (target spacing, patch size)")
        self.content.addWidget(self.plan_line)
        charts = Card("Dice")
        self.caption = hint("")
        charts.header.addWidget(self.caption, 1)
        self.canvas = Canvas(columns=2)
        self.site_axes, self.local_axes = self.canvas.axes
        charts.body.addWidget(self.canvas, 1)
        self.content.addWidget(charts, 3)
        self.privacy = Card("Privacy spent")
        self.privacy.header.addWidget(hint("Epsilon each site with differential privacy has spent by the "
                                           "end of each round; a round beyond its budget is refused (code "
                                           "108)"), 1)
        self.privacy_canvas = Canvas()
        (self.epsilon_axes,) = self.privacy_canvas.axes
        self.privacy.body.addWidget(self.privacy_canvas, 1)
        self.content.addWidget(self.privacy, 2)
        records = Card("Records")
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        records.body.addWidget(self.table, 1)
        self.content.addWidget(records, 2)
        self.metrics.changed.connect(self.refresh)
        workbench.training.changed.connect(self._training_changed)
        self.refresh()

    # -- sources -------------------------------------------------------------------------------
    def follow_file(self, path: Path | None) -> None:
        """Show the site metrics in an events file and keep following it as the federation runs."""
        if path is None or not path.is_file():
            missing = FileNotFoundError(2, "no such events file", str(path or ""))
            show_error(self, "Nothing to follow", missing, "reading the events")
            return
        self.source.set_path(path)
        self.metrics.clear()
        self.tail = EventTail(path, from_start=True)
        self.follow()
        self.timer.start()

    def follow(self) -> None:
        if self.tail is not None:
            self.metrics.apply_all(self.tail.read())

    # -- export --------------------------------------------------------------------------------
    def choose_png(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export the charts",
                                                str(self._export_dir() / "dice.png"), "PNG (*.png)")
        if chosen:
            self.save_png(Path(chosen))

    def choose_csv(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export the records",
                                                str(self._export_dir() / "site-metrics.csv"), "CSV (*.csv)")
        if chosen:
            self.save_csv(Path(chosen))

    def save_png(self, path: Path) -> None:
        """The Dice charts and, when a site trains with DP, the privacy chart below them, in one PNG."""
        figures = [self.canvas.figure]
        if self.privacy.isVisibleTo(self):
            figures.append(self.privacy_canvas.figure)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            imsave(path, stacked_image(figures))
        except OSError as error:
            show_error(self, "Export failed", error, "saving the PNG")
            return
        self.shell.show_status(f"Wrote {path}")

    def save_csv(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.metrics.to_csv(), encoding="utf-8")
        except OSError as error:
            show_error(self, "Export failed", error, "saving the CSV")
            return
        self.shell.show_status(f"Wrote {path}")

    def _export_dir(self) -> Path:
        return self.workbench.settings.workspace_dir / "exports"

    # -- view ----------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.refresh()

    def _training_changed(self) -> None:
        if self.isVisible():
            self.refresh()

    def refresh(self) -> None:
        self._draw()
        header, rows = self.metrics.table()
        self.table.setColumnCount(len(header))
        self.table.setHorizontalHeaderLabels(header)
        self.table.setRowCount(len(rows))
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        sites, rounds = self.metrics.sites(), self.metrics.rounds()
        self.caption.setText(f"{len(sites)} site(s), {len(rounds)} round(s)" if sites else
                             "Follow a federation's events file, or join on the Federation page.")
        plan = self.metrics.plan_line()
        self.plan_line.setText(plan)
        self.plan_line.setVisible(bool(plan))
        self.export_csv.setEnabled(bool(rows))

    def _draw(self) -> None:
        for axes in (self.site_axes, self.local_axes):
            axes.clear()
        style_axes(self.site_axes, "Global model, per site", "round", "Dice")
        style_axes(self.local_axes, "This site, local training", "epoch", "validation Dice")
        for site, points in self.metrics.dice_by_site().items():
            rounds, values = zip(*points, strict=True)
            self.site_axes.plot(rounds, values, marker="o", markersize=4, linewidth=1.8,
                                color=self._colour(site), label=site)
        curves = self.workbench.training.curves
        if curves.mean_dice:
            epochs, values = zip(*curves.mean_dice, strict=True)
            self.local_axes.plot(epochs, values, color="white", linewidth=1.8, marker="o", markersize=3,
                                 label="mean")
        for axes in (self.site_axes, self.local_axes):
            axes.set_ylim(0, 1)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        style_legend(self.site_axes)
        style_legend(self.local_axes)
        self.canvas.draw_idle()
        self._draw_privacy()

    def _draw_privacy(self) -> None:
        """Epsilon spent per DP site and round, in each site's colour of the Dice chart; hidden without DP."""
        epsilon = self.metrics.epsilon_by_site()
        self.privacy.setVisible(bool(epsilon))
        self.epsilon_axes.clear()
        style_axes(self.epsilon_axes, "Differential privacy, per site", "round", "epsilon spent")
        for site, points in epsilon.items():
            rounds, values = zip(*points, strict=True)
            self.epsilon_axes.plot(rounds, values, marker="o", markersize=4, linewidth=1.8,
                                   color=self._colour(site), label=site)
        self.epsilon_axes.set_ylim(bottom=0)
        self.epsilon_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        style_legend(self.epsilon_axes)
        self.privacy_canvas.draw_idle()

    def _colour(self, site: str) -> tuple[float, float, float]:
        """A site's colour, the same on every chart: its place among all the run's sites."""
        return rgb_to_mpl(label_color(self.metrics.sites().index(site) + 1))
