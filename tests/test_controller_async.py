"""The controller with the ask off its critical path (issue 18).

The real BoTorch back-end proposes while real evaluations (procedural structures, TauFactor,
PyBaMM at 2 cubes of 24^3) run on the local executor. An ask started while jobs run is held
open until the controller journaled a job's outcome, so a job provably ends during the ask on any
machine: its result must be journaled at once, told after the ask, and the ask's points must
fill a free slot within one poll cycle. A failing ask must stop the campaign with its reason and
lose nothing. The duplicate guard and the ask-size policy are checked on their own with a real
search space."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from bayes.optimizer import make_optimizer
from bayes.space import Space
from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign, CampaignError
from hpc.campaign.journal import read_journal
from hpc.campaign.proposer import AskFailed, BackgroundAsker, DuplicateGuard, ReleaseRate, ask_size
from tests.test_campaign import tiny_campaign

#: journal events that end a job's attempt: a result, a failed attempt set back for a retry,
#: or a trial failed for good
OUTCOMES = ("completed", "retried", "failed")


class GatedOptimizer:
    """The campaign's real optimiser, with each ask begun while jobs run held open until the
    controller journaled a job's outcome (`outcome_seen`, set from the controller's thread).

    Why: whether a job finishes inside an ask must not depend on how fast this machine runs
    the jobs against the ask. Held like this, one provably does, on a quiet or a loaded
    machine. Records when each tell came and whether one came while an ask was running (the
    optimiser is not thread-safe: the controller must never do that)."""

    def __init__(self, inner, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self.outcome_seen = threading.Event()
        self.hold_next = False  # set by the controller's thread when it starts an ask ...
        self.hold_started = 0.0  # ... and when (epoch seconds, as journal times)
        self.asking = False
        self.held: list[tuple[float, float]] = []  # (started, returned) of each held ask
        self.told: list[tuple[float, dict]] = []
        self.told_while_asking = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def ask(self, n, pending=None):
        hold, started = self.hold_next, self.hold_started
        self.asking = True
        try:
            points = self._inner.ask(n, pending)
            if hold and not self.outcome_seen.wait(self._timeout_s):
                raise AssertionError(f"no job outcome was journaled within {self._timeout_s} s "
                                     "of an ask started while jobs ran")
        finally:
            self.asking = False
        if hold:
            self.held.append((started, time.time()))
        return points

    def tell(self, points, values, noise_var=None, feasible=True):
        self._record(points)
        self._inner.tell(points, values, noise_var=noise_var, feasible=feasible)

    def tell_failed(self, points, reasons=None):
        self._record(points)
        self._inner.tell_failed(points, reasons)

    def _record(self, points) -> None:
        self.told_while_asking += self.asking
        for point in [points] if isinstance(points, dict) else points:
            self.told.append((time.time(), dict(point)))


def _gate(controller: Campaign, optimizer) -> None:
    """Put `optimizer` (wrapping the real one) in the controller and its asker."""
    controller.optimizer = optimizer
    controller.asker.optimizer = optimizer


@pytest.mark.slow
def test_outcomes_arriving_during_an_ask_are_journaled_at_once_and_told_after_it(tmp_path):
    campaign = tiny_campaign(
        tmp_path / "gated.toml",
        optimizer={"budget": 4, "max_concurrent": 2, "n_initial": 2, "seed": 1},
        resources={"dask_workers": 0, "poll_interval_s": 0.2, "max_retries": 1},
        # trial 1 starts 5 s late, so it still runs when trial 0's result starts the first
        # model-based ask (that ask is then held until trial 1 ends)
        faults=[{"trial_id": 1, "attempts": 1, "mode": "delay", "delay_s": 5.0}],
    )
    controller = Campaign.create(load_campaign(campaign), tmp_path / "run")
    gated = GatedOptimizer(controller.optimizer, timeout_s=600.0)
    _gate(controller, gated)
    start_ask, journal_event, poll_once = (controller.asker.start, controller.journal_event,
                                           controller._poll_once)
    polls: list[float] = []

    def start(n, pending):  # the controller's thread: hold this ask if jobs are running
        gated.hold_next = bool(controller.in_flight())
        gated.hold_started = time.time()
        gated.outcome_seen.clear()
        start_ask(n, pending)

    def journal(event, **fields):
        journal_event(event, **fields)
        if event in OUTCOMES and controller.asker.busy:
            gated.outcome_seen.set()

    def poll():
        polls.append(time.time())
        poll_once()

    controller.asker.start, controller.journal_event, controller._poll_once = start, journal, poll
    try:
        progress = controller.run(report=None)
    finally:
        controller.close()
    assert progress.complete == 4 and progress.failed == 0
    assert gated.held, "no ask started while a job ran (trial 1 is delayed to make sure one does)"
    events = read_journal(tmp_path / "run")
    params = {t.trial_id: t.params for t in controller.trials.values()}
    for started, returned in gated.held:
        during = [e for e in events if e["event"] in OUTCOMES and started < e["time"] < returned]
        assert during, (started, returned, events)  # journaled before the ask returned ...
        for outcome in during:  # ... and told to the optimiser only after it
            told = [at for at, point in gated.told if point == params[outcome["trial_id"]]]
            assert told and min(told) >= returned, (outcome, told, returned)
    assert gated.told_while_asking == 0
    # once an ask's points were ready, a free slot got one within one poll cycle: at most one
    # poll started between the ask's return and the next proposal
    proposed = [e for e in events if e["event"] == "proposed"]
    for ask in controller.ask_log:
        if not ask.points:
            continue
        running = _running_at(events, ask.finished_at_s)
        later = [e["time"] for e in proposed if e["time"] > ask.finished_at_s]
        if running < 2 and later:
            cycles = [t for t in polls if ask.finished_at_s < t < later[0]]
            assert len(cycles) <= 1, (ask, cycles, later[0])
    state = json.loads((tmp_path / "run" / "optimizer_state.json").read_text())
    assert state["told"] == list(range(4)) and len(state["state"]["observations"]) == 4
    space = controller.space  # no point proposed twice
    units = np.stack([space.to_unit(t.params) for t in controller.trials.values()])
    distances = np.linalg.norm(units[:, None] - units[None], axis=-1)[np.triu_indices(4, 1)]
    assert distances.min() > 1e-3 * np.sqrt(space.dim)


def _running_at(events: list[dict], at_s: float) -> int:
    """Trials proposed and not yet completed or failed at time `at_s` (journal times)."""
    proposed = {e["trial_id"] for e in events if e["event"] == "proposed" and e["time"] <= at_s}
    done = {e["trial_id"] for e in events if e["event"] in ("completed", "failed")
            and e["time"] <= at_s}
    return len(proposed - done)


class FailingAsk(GatedOptimizer):
    """The real optimiser whose `fail_on`-th ask raises after it ran (as a numerical failure
    deep in a GP fit would), once."""

    def __init__(self, inner, fail_on: int) -> None:
        super().__init__(inner, timeout_s=0.0)
        self.fail_on, self.n_asks_seen = fail_on, 0

    def ask(self, n, pending=None):
        points = self._inner.ask(n, pending)
        self.n_asks_seen += 1
        if self.n_asks_seen == self.fail_on:
            raise np.linalg.LinAlgError("injected: covariance not positive definite")
        return points


@pytest.mark.slow
def test_a_failing_ask_stops_the_campaign_with_its_reason_and_loses_nothing(tmp_path):
    campaign = tiny_campaign(
        tmp_path / "failing.toml",
        optimizer={"budget": 4, "max_concurrent": 2, "n_initial": 2, "seed": 2},
        resources={"dask_workers": 0, "poll_interval_s": 0.2, "max_retries": 1},
    )
    folder = tmp_path / "run"
    controller = Campaign.create(load_campaign(campaign), folder)
    _gate(controller, FailingAsk(controller.optimizer, fail_on=2))  # the first model-based ask
    try:
        with pytest.raises(CampaignError) as raised:
            controller.run(report=None)
    finally:
        controller.close()
    # the real reason surfaces: named, with the original error chained
    message = str(raised.value)
    assert "LinAlgError: injected: covariance not positive definite" in message, message
    assert "ask(" in message and "microloop resume" in message
    assert isinstance(raised.value.__cause__, AskFailed)
    assert isinstance(raised.value.__cause__.__cause__, np.linalg.LinAlgError)
    events = read_journal(folder)
    stopped = [e for e in events if e["event"] == "campaign_stopped"]
    assert len(stopped) == 1 and "LinAlgError" in stopped[0]["reason"]
    assert stopped[0]["error_type"] == "LinAlgError"
    # nothing lost: what completed is journaled and told to the saved optimiser state
    completed = sorted(e["trial_id"] for e in events if e["event"] == "completed")
    assert completed, events  # the failing ask was started by a result
    state = json.loads((folder / "optimizer_state.json").read_text())
    assert set(completed) <= set(state["told"])
    # and the campaign resumes with its real optimiser to the end, every trial told once
    resumed = Campaign.open(folder)
    try:
        progress = resumed.run(report=None)
    finally:
        resumed.close()
    assert progress.complete == 4 and progress.failed == 0
    state = json.loads((folder / "optimizer_state.json").read_text())
    assert state["told"] == list(range(4)) and len(state["state"]["observations"]) == 4


def test_the_background_asker_raises_a_failed_ask_as_a_named_failure():
    # a real optimiser and a real error: a pending point outside the space
    space = Space({"a": (0.0, 1.0), "b": (0.0, 1.0)})
    optimizer = make_optimizer(space, backend="sobol", seed=0)
    asker = BackgroundAsker(optimizer)
    asker.start(2, [{"a": 3.0, "b": 0.5}])
    with pytest.raises(AskFailed) as raised:
        asker.take(block=True)
    failure = raised.value
    assert (failure.n_requested, failure.n_pending, failure.n_observations) == (2, 1, 0)
    assert failure.error_type == "ValueError" and "pending[0]" in str(failure)
    assert isinstance(failure.__cause__, ValueError)
    assert not asker.busy and asker.take() is None  # taken once, not again
    # the asker works again afterwards, and an after_ask failure is no outcome either
    asker.start(2, [])
    assert len(asker.take(block=True).points) == 2

    def broken_snapshot(_):
        raise OSError(28, "No space left on device")

    asker = BackgroundAsker(optimizer, after_ask=broken_snapshot)
    asker.start(1, [])
    with pytest.raises(AskFailed, match="OSError"):
        asker.take(block=True)


def test_duplicate_guard_rejects_repeats_of_any_trial_and_within_a_batch():
    space = Space({"a": (0.0, 10.0), "b": (1.0, 100.0)}, log_scale=["b"], fixed={"c": 2.0})
    radius = 1e-3 * np.sqrt(space.dim)
    guard = DuplicateGuard(space, radius)
    for i in range(100):  # past the first growth of its array
        guard.add({"a": i / 10, "b": 1.0 + i, "c": 2.0})
    assert len(guard) == 100
    # a repeat of a held trial (fixed value omitted: the proposal form), one a hair away
    # (0.5 radius in unit distance), a new one, and the new one again in the same batch
    hair = 10.0 * 0.5 * radius
    kept, rejected = guard.keep_new([{"a": 0.3, "b": 4.0}, {"a": 5.0 + hair, "b": 51.0},
                                     {"a": 9.95, "b": 3.0}, {"a": 9.95, "b": 3.0}])
    assert rejected == 3 and kept == [{"a": 9.95, "b": 3.0}]
    # beyond the radius is a different design
    far = 10.0 * 2.0 * radius
    assert guard.keep_new([{"a": 9.95 + far, "b": 3.0}])[1] == 0


def test_ask_size_covers_free_slots_and_the_slots_freed_during_the_next_ask():
    # a laptop: slow releases, fast asks -> exactly the free slots (what an inline ask took)
    assert ask_size(2, 0, 100, releases_per_s=1 / 300, last_ask_s=2.0, max_concurrent=2) == 2
    # 256 workers of 2 minutes free 2.1 slots/s; a 10 s ask: ~32 slots free while it runs
    n = ask_size(3, 0, 10_000, releases_per_s=256 / 120, last_ask_s=10.0, max_concurrent=256)
    assert 3 + 256 / 120 * 10.0 <= n <= 3 + 256
    # the buffer counts, and the budget caps the ask
    assert ask_size(3, 5, 10_000, 0.0, 0.0, 256) == 0
    assert ask_size(300, 0, 7, 2.0, 60.0, 256) == 7
    assert ask_size(300, 4, 7, 2.0, 60.0, 256) == 3
    rate = ReleaseRate(window=4)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        rate.add(t)
    assert rate.per_s(6.0) == pytest.approx(4 / 4.0)  # the last 4 releases over 2..6 s


def test_an_async_campaign_never_waits_for_a_refit_and_a_sync_one_stays_reproducible(tmp_path):
    """The async controller times its asks anyway, so its optimiser uses a background refit as
    soon as it is done ("when_ready"); a sync campaign keeps the reproducible "next_ask"; an
    explicit option wins."""
    modes = {}
    for name, optimizer in [("async", {}), ("sync", {"mode": "sync"}),
                            ("explicit", {"options": {"background_refit": "off"}})]:
        campaign = tiny_campaign(tmp_path / f"{name}.toml", optimizer=optimizer,
                                 resources={"dask_workers": 0})
        controller = Campaign.create(load_campaign(campaign), tmp_path / name)
        try:
            modes[name] = controller.optimizer.options["background_refit"]
        finally:
            controller.close()
    assert modes == {"async": "when_ready", "sync": "next_ask", "explicit": "off"}
