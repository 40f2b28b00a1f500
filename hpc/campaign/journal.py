"""The campaign journal: an append-only JSON-lines log of every trial event.

Each event is written, flushed and fsync'ed BEFORE the controller acts on it, so a controller
killed at any instant can be rebuilt by replaying the file: nothing lost, nothing run twice.
A kill in the middle of a write leaves at most one torn last line, which is dropped on reopening.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"

#: Events a trial goes through; `retried` and `submitted` may repeat (one per attempt).
EVENTS = (
    "campaign_started",  # controller (re)started: budget, pid
    "proposed",          # trial_id, params (before anything is submitted)
    "submitting",        # trial_id, attempt (before the executor is called)
    "submitted",         # trial_id, attempt, job_id
    "completed",         # trial_id, result (the evaluation's dict)
    "retried",           # trial_id, attempt that failed, reason
    "failed",            # trial_id, reason (retries exhausted)
    "warm_start",        # source folder, n observations used or the reason it was skipped
    "campaign_finished",
    "campaign_stopped",  # reason: the controller stopped itself (repeated refused submissions)
)


class Journal:
    """Append events durably; read them back in order."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / JOURNAL_NAME
        self._repair_torn_tail()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the campaign

    def _repair_torn_tail(self) -> None:
        """Drop a last line without its newline (a write interrupted by a kill)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("journal %s: dropping a torn last line (%d bytes)", self.path, len(data) - keep)
        with open(self.path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}; allowed: {EVENTS}")
        record = json_safe({"event": event, "time": time.time(), **fields})
        self._file.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        self._file.close()


def json_safe(value: Any) -> Any:
    """Non-finite floats become None (JSON has no inf/NaN); tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


class JournalError(ValueError):
    """A damaged journal: which file, which line, and why (never guessed around)."""


def read_journal(directory: Path) -> list[dict[str, Any]]:
    """All complete events of a campaign folder, in order (a torn last line is ignored).

    A damaged line elsewhere (bad bytes, not JSON, not an event) raises JournalError naming the
    file and the line: skipping it could forget a submitted job and run it twice."""
    path = Path(directory) / JOURNAL_NAME
    if not path.exists():
        return []
    events = []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
            if not isinstance(event, dict) or event.get("event") not in EVENTS:
                raise ValueError(f"not a journal event (events: {', '.join(EVENTS)})")
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if number == len(lines):  # the torn tail of a killed write
                break
            raise JournalError(
                f"{path}: line {number} is damaged ({type(error).__name__}: {error}); "
                "microloop will not guess which events it held: restore the journal from a "
                "backup, or start a new campaign folder") from None
        events.append(event)
    return events
