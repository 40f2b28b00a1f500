"""Proposals off the controller's critical path: one background ask at a time, a buffer of
ready points, and a duplicate guard over every point the campaign ever proposed.

Why: an ask that refits a GP takes seconds to minutes (issue 18: 30 CPU-s at 1000
observations). Asked inline, nothing is polled, told or submitted meanwhile and every freed
slot waits for the whole ask. Here the ask runs in a worker thread; the controller keeps
polling and journaling, and results that arrive meanwhile are told to the optimiser as soon
as the ask returns (the optimiser is never used by two threads at once: its `tell` and `ask`
are not thread-safe). An ask asks for the free slots plus the slots expected to free while
the next ask runs (`ask_size`), so a slot that frees during an ask is refilled from the
buffer at the next poll cycle instead of waiting for an ask of its own.

The same pieces drive the utilisation benchmark (tests/benchmarks/bench_bo_utilisation.py) on
a virtual clock, so what it measures is this policy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AskOutcome:
    """What one ask returned and what it cost (CPU seconds of the asking thread)."""

    points: list[dict[str, float]]
    n_requested: int
    n_pending: int
    n_observations: int
    cpu_s: float
    wall_s: float
    #: epoch seconds (journal times are epoch seconds too)
    started_at_s: float
    finished_at_s: float


def ask_size(free_slots: int, n_buffered: int, budget_left: int, releases_per_s: float,
             last_ask_s: float, max_concurrent: int) -> int:
    """How many points the next ask should propose.

    The free slots not covered by the buffer, plus the slots expected to free while this ask
    runs (release rate x the last ask's duration, with 50 % margin, at most one slot per
    worker), minus what the buffer already holds; never beyond the budget. With a slow
    release rate (a laptop) this is just the free slots, as an inline ask would take."""
    expected = 1.5 * max(releases_per_s, 0.0) * max(last_ask_s, 0.0)
    ahead = min(max_concurrent, math.floor(expected + 0.5))  # less than half a slot: none
    want = max(free_slots, 0) + ahead - max(n_buffered, 0)
    return max(0, min(want, budget_left - max(n_buffered, 0)))


class ReleaseRate:
    """Slots freed per second, from the times of the last `window` releases."""

    def __init__(self, window: int = 256) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def add(self, at_s: float, n: int = 1) -> None:
        for _ in range(n):
            self._times.append(at_s)

    def per_s(self, now_s: float) -> float:
        if len(self._times) < 2 or now_s <= self._times[0]:
            return 0.0
        return len(self._times) / (now_s - self._times[0])


class DuplicateGuard:
    """Unit-cube coordinates of every point the campaign holds (proposed, running, evaluated,
    failed, buffered): a proposal within `radius` of one of them, or of an earlier point of its
    own batch, is rejected. Why a guard outside the optimiser: a background ask is computed with
    the pending points of its start, and an optimiser's own exclusion is only as good as what it
    was told (issue 18: trials 6 and 9 of a quick run were identical)."""

    def __init__(self, space: Any, radius: float) -> None:
        if not radius >= 0.0:
            raise ValueError(f"duplicate radius must be >= 0; got {radius!r}")
        self.space = space
        self.radius = float(radius)
        self._units = np.zeros((64, space.dim))
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _unit(self, point: Mapping[str, float]) -> np.ndarray:
        named = {name: point[name] for name in self.space.names if name in point}
        return self.space.to_unit({**self.space.fixed, **named})

    def add(self, point: Mapping[str, float]) -> None:
        if self._n == len(self._units):
            self._units = np.concatenate([self._units, np.zeros_like(self._units)])
        self._units[self._n] = self._unit(point)
        self._n += 1

    def is_new(self, point: Mapping[str, float]) -> bool:
        if not self._n:
            return True
        unit = self._unit(point)
        nearest = np.min(np.linalg.norm(self._units[:self._n] - unit, axis=1))
        return bool(nearest > self.radius)

    def keep_new(self, points: Sequence[Mapping[str, float]]) -> tuple[list[dict], int]:
        """The points that are new (each accepted one is added, so a batch cannot repeat
        itself), and how many were rejected."""
        kept = []
        for point in points:
            if self.is_new(point):
                self.add(point)
                kept.append(dict(point))
        return kept, len(points) - len(kept)


class AskFailed(RuntimeError):
    """The optimiser's ask (or the state snapshot after it) raised in the worker thread.

    Why a named error: the ask runs off the controller's thread, so without it the real reason
    would either vanish with the thread or surface as a bare error with no campaign context.
    It carries what was asked and the original error's type and message; the original error is
    chained as ``__cause__`` (its traceback included)."""

    def __init__(self, n_requested: int, n_pending: int, n_observations: int,
                 error: BaseException) -> None:
        self.n_requested = n_requested
        self.n_pending = n_pending
        self.n_observations = n_observations
        self.error_type = type(error).__name__
        self.error_message = str(error)
        super().__init__(f"ask({n_requested}, {n_pending} pending) at {n_observations} "
                         f"observations raised {self.error_type}: {self.error_message}")


class BackgroundAsker:
    """Runs `optimizer.ask(n, pending)` in one worker thread, then `after_ask(optimizer)` (the
    controller saves the optimiser state there, off the critical path too).

    While `busy`, the caller must not touch the optimiser; it queues its tells and applies them
    once `take()` returned the outcome. Anything the ask raises is raised by `take()` as
    :class:`AskFailed` (the original chained): never a proposal, never dropped."""

    def __init__(self, optimizer: Any, after_ask: Callable[[Any], None] | None = None) -> None:
        self.optimizer = optimizer
        self._after_ask = after_ask
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._outcome: AskOutcome | None = None
        self._error: BaseException | None = None
        self._asked: tuple[int, int, int] = (0, 0, 0)  # n, pending, observations of this ask

    @property
    def busy(self) -> bool:
        """An ask is running or its outcome has not been taken yet."""
        return self._thread is not None

    def start(self, n: int, pending: Sequence[Mapping[str, float]]) -> None:
        if self.busy:
            raise RuntimeError("an ask is already running; take() its outcome first")
        pending = [dict(p) for p in pending]
        self._done.clear()
        self._outcome, self._error = None, None
        self._asked = (int(n), len(pending), self.optimizer.n_observations)
        self._thread = threading.Thread(target=self._run, args=(int(n), pending),
                                        name="microloop-ask", daemon=True)
        self._thread.start()

    def _run(self, n: int, pending: list[dict[str, float]]) -> None:
        try:
            cpu, wall, started = time.thread_time(), time.perf_counter(), time.time()
            points = self.optimizer.ask(n, pending)
            outcome = AskOutcome(points, n, len(pending), self.optimizer.n_observations,
                                 time.thread_time() - cpu, time.perf_counter() - wall,
                                 started, time.time())
            if self._after_ask is not None:
                self._after_ask(self.optimizer)
            self._outcome = outcome
        # Everything, SystemExit included: this thread has no caller to propagate to, and an
        # ask that ended without an outcome must not look like an empty one. take() raises it.
        except BaseException as error:
            self._error = error
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`, waking as soon as a running ask is done; True if done."""
        if self._thread is None:
            time.sleep(timeout_s)
            return False
        return self._done.wait(timeout_s)

    def take(self, block: bool = False) -> AskOutcome | None:
        """The finished ask's outcome (None while it runs, or when none was started)."""
        if self._thread is None or not (self._done.is_set() or block):
            return None
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise AskFailed(*self._asked, error) from error
        outcome, self._outcome = self._outcome, None
        return outcome
