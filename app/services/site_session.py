"""This workbench's part in a federation, without Qt: the site process it joins with, and the local demo
federation it can take part in. The Federation page calls these and shows `SiteRun`; every state comes
from the processes' events and exit statuses, never from their log text."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from app.models.federation import SiteRun, SiteState
from app.models.metrics import FederationMetrics
from app.services.child_process import EXIT_INTERRUPTED
from app.services.demo import DEMO_JOIN_SITE, DemoFederationJob
from app.services.federation_site import SiteForm, SiteJob, site_folder, write_site_config
from segmentation.errors import ConfigError

REPORT_NAME = "report.md"  # what `fedseg demo` writes into its folder when it finishes


class SiteSession:
    """Join writes WORKSPACE/federation/<site>/site.toml (checked by the federation's loader) and starts
    `fedseg site`; poll() feeds its events to the SiteRun and the shared per-site metrics and, once the
    process ended, sets the final state; leave() asks it to stop (it finishes its step first)."""

    def __init__(self, run: SiteRun, metrics: FederationMetrics) -> None:
        self.run, self.metrics = run, metrics
        self.job: SiteJob | None = None
        self.ended = False  # the current job's end was taken in

    @property
    def active(self) -> bool:
        return self.job is not None and self.job.running

    def join(self, form: SiteForm, workspace: Path) -> None:
        """Start the site process; a FedSegError (the form, site.toml) or OSError says why it cannot."""
        if self.active:
            raise ConfigError("this site is in a federation already; leave it first")
        form.check()
        job = SiteJob(write_site_config(form, site_folder(workspace / "federation", form.name)))
        job.start()
        self.job, self.ended = job, False
        self.run.reset()
        self.metrics.clear()
        self.run.set_state(SiteState.CONNECTING, f"connecting to {form.server_address}…")

    def leave(self) -> None:
        if self.active:
            self.job.request_stop()  # type: ignore[union-attr]
            self.run.set_state(SiteState.LEAVING, "leaving the federation…")

    def poll(self) -> str | None:
        """Take the site's new events; once the process has ended, set LEFT or FAILED and return the
        failure's sentence (None while it runs, after a chosen Leave, and on every later call)."""
        job = self.job
        if job is None:
            return None
        events = job.events()
        self.run.apply_all(events)
        self.metrics.apply_all(events)
        if job.running or self.ended:
            return None
        self.ended = True
        if job.exit_code == 0 or job.stop_requested:  # Leave during start-up ends it before it saved anything
            self.run.set_state(SiteState.LEFT, "left the federation")
            return None
        # A join that gave up already said why in its events; anything else is in the process's output.
        message = self.run.message if self.run.state is SiteState.FAILED else job.failure_message()
        self.run.set_state(SiteState.FAILED, message)
        return message

    def log_tail(self, lines: int = 60) -> str:
        return self.job.log_tail(lines) if self.job is not None else ""


@dataclass(frozen=True)
class DemoUpdate:
    """What changed in the demo since the last poll: a site.toml to join with, the server's event file to
    follow, the demo's latest line, and whether (and how) it ended."""

    status: str = ""
    join: Path | None = None
    follow: Path | None = None
    ended: bool = False
    failure: str = ""


class DemoSession:
    """`fedseg demo --join-site ct` in the background with this workbench as its CT site: the demo
    announces the site.toml this workbench joins with, the server's events are followed once they exist,
    and stopping leaves the federation first, then stops the demo."""

    def __init__(self, site: SiteSession, folder: Path) -> None:
        self.site, self.folder = site, folder
        self.job: DemoFederationJob | None = None
        self.joined = self.following = False
        self.joined_job: SiteJob | None = None  # the site job that joined this demo
        self.started = 0.0

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self) -> None:
        if self.site.active:
            raise ConfigError("this site is in a federation already; leave it first")
        self.job = DemoFederationJob(self.folder, join_site=DEMO_JOIN_SITE)
        self.job.start()
        self.started = time.time()
        self.joined = self.following = False
        self.joined_job = None

    def joined_with(self, job: SiteJob | None) -> None:
        """The page joined the announced site (or tried to): never join this demo twice."""
        self.joined, self.joined_job = True, job

    def stop(self) -> None:
        self._leave()
        if self.running:
            self.job.request_stop()  # type: ignore[union-attr]

    def poll(self) -> DemoUpdate:
        job = self.job
        if job is None:
            return DemoUpdate()
        join = None if self.joined else job.joining_site_config()
        follow = None if self.following else job.server_events()
        self.following = self.following or follow is not None
        lines = [line for line in job.log_tail(5).splitlines() if line.strip()]
        if job.running:
            return DemoUpdate(lines[-1][-160:] if lines else "", join, follow)
        self._leave()
        self.job = None
        if job.exit_code in (0, EXIT_INTERRUPTED):
            report = job.out / REPORT_NAME
            written = report.is_file() and report.stat().st_mtime >= self.started  # not an earlier run's
            status = (f"The demo federation ended; its report is {report}" if written else
                      "The demo federation was stopped before it wrote its report.")
            return DemoUpdate(status, follow=follow, ended=True)
        failure = job.failure_message()
        return DemoUpdate("The demo federation failed.", follow=follow, ended=True, failure=failure)

    def _leave(self) -> None:
        """Leave the demo's federation once, if this site joined it and has not left (or joined another)."""
        if self.joined_job is not None and self.joined_job is self.site.job:
            self.site.leave()
        self.joined_job = None
