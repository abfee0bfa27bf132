"""The project's one event stream: JSON objects, one per line, written by every long job.

Training, a site's federation process and the server all write these; the CLI's progress bars and
the GUI's widgets both read them, so there is no second progress mechanism. Every event has
`kind`, `time` (Unix seconds) and `job`; the other fields depend on the kind:

  started     epochs, (round)                           a job began
  progress    epoch, epochs, step, steps, loss, (round) one optimisation step finished
  epoch       epoch, loss, metrics{...}, (round)        an epoch finished (metrics may be empty)
  evaluation  metrics{...}, (round)                     an evaluation finished
  checkpoint  epoch, (round), (summary{...})            weights were saved (no path: events may travel);
                                                        a federated training round's carries what it
                                                        cost (federation.round_costs)
  finished    metrics{...}                              the job ended normally
  stopped     epoch                                     the job was interrupted and saved its state
  error       code, message                             the job failed (message stays local)
  site-metrics  round, site, phase, status, num_examples, metrics{...}
                                                        one site's numbers in a federated round, as
                                                        the server recorded them (numbers, no paths)
  plan        plan{...}, description, source, (sites[...])  the plan a federated run follows: made from
                                                        the sites' fingerprints (each site's status and
                                                        number of cases) or kept from its checkpoint
  connection  state, (reason), (timeout)                 a site's link to the server: connecting,
                                                        connected, failed (reason: unreachable, tls,
                                                        key-refused, timeout)
  global-model  round                                   a site saved the global model of that finished
                                                        round in its folder (no path)
  personalised-model  round, epochs, metrics{...}       a site fine-tuned the final global model on its
                                                        own data and saved it beside it (no path)
  mask-correction  round, peers                         a site sent the server its encrypted mask
                                                        corrections for that many dropped peers
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

EVENT_KINDS = (
    "started", "progress", "epoch", "evaluation", "checkpoint", "finished", "stopped", "error",
    "site-metrics", "plan", "connection", "global-model", "personalised-model", "mask-correction",
)


def _jsonable(value: Any) -> Any:
    """Numbers stay numbers; NaN/Inf become None so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


Listener = Callable[[dict[str, Any]], None]


class EventWriter:
    """Appends events for one job to a JSON-lines file (or any text stream), flushing each line.

    Listeners get every event dict as it is written: an in-process progress bar reads exactly what
    a reader of the file would.
    """

    def __init__(
        self, target: str | Path | IO[str] | None, job: str, listeners: tuple[Listener, ...] = ()
    ) -> None:
        self.job = job
        self.listeners = list(listeners)
        self._owns = isinstance(target, (str, Path))
        if self._owns:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._stream: IO[str] | None = open(target, "a", encoding="utf-8")  # noqa: SIM115
        else:
            self._stream = target

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = {"kind": kind, "time": time.time(), "job": self.job, **_jsonable(fields)}
        if self._stream is not None:
            self._stream.write(json.dumps(event, allow_nan=False) + "\n")
            self._stream.flush()
        for listener in self.listeners:
            listener(event)
        return event

    def close(self) -> None:
        if self._owns and self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the complete events in a file, skipping a half-written last line."""
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class EventTail:
    """Follows a growing events file: each read() returns the complete events added since the last.

    A half-written last line waits for the next read; a file that shrank (replaced by a new run) is
    read again from its start. Iterating a tail is the same as iterating one read().
    """

    def __init__(self, path: str | Path, from_start: bool = False) -> None:
        self.path = Path(path)
        self.offset = 0 if from_start or not self.path.exists() else self.path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(0, 2)
                if stream.tell() < self.offset:
                    self.offset = 0
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        events = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())
