"""Incremental persistence (issue 18): the journal is appended per event; trials.csv and the
optimiser state are snapshots taken every `snapshot_every(n)` events, so their cost per event
does not grow with the campaign, and a resume rebuilds whatever the last snapshot lacks from
the journal. Real campaign folder, real controller methods, a real evaluation result."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign, snapshot_every
from tests.test_campaign import tiny_campaign

RESULT = Path(__file__).parent / "benchmarks" / "data" / "evaluation_result.json"


def _finish(campaign: Campaign, n: int) -> None:
    """n trials through the controller's own event path, as `_drive` handles them."""
    template = json.loads(RESULT.read_text())
    for _ in range(n):
        trial_id = len(campaign.trials)
        point = {"am_wt_frac": 0.86 + 0.1 * trial_id / 200, "porosity": 0.3,
                 "binder_adhesion": 0.5, "mass_loading_mg_cm2": 15.0}
        campaign.journal_event("proposed", trial_id=trial_id, params=point)
        campaign.journal_event("submitting", trial_id=trial_id, attempt=1)
        campaign.journal_event("submitted", trial_id=trial_id, attempt=1, job_id=str(trial_id))
        result = copy.deepcopy(template)
        result.update(trial_id=trial_id, params=point, job_id=str(trial_id))
        result["objective"]["value"] = 400.0 + trial_id
        campaign.journal_event("completed", trial_id=trial_id, result=result)
        campaign._after_done(campaign.trials[trial_id])
        campaign._persist()


def _rows(folder: Path) -> list[dict]:
    with open(folder / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def test_snapshots_are_taken_every_n_events_and_a_resume_rebuilds_the_rest(tmp_path):
    config = load_campaign(tiny_campaign(tmp_path / "c.toml",
                                         optimizer={"backend": "sobol", "budget": 200,
                                                    "max_concurrent": 8}))
    folder = tmp_path / "run"
    campaign = Campaign.create(config, folder)
    try:
        _finish(campaign, 30)  # 120 events: snapshots due every 20
        state = json.loads((folder / "optimizer_state.json").read_text())
        rows = _rows(folder)
        # a snapshot, not a rewrite per event: each lags the journal by less than one period
        assert 0 < 120 - 4 * len(rows) <= snapshot_every(30)
        assert 30 - snapshot_every(30) < len(state["told"]) < 30
        assert state["told"] == list(range(len(state["told"])))
    finally:
        # a kill here: close only the files, as a SIGKILL would (no final snapshot)
        campaign.journal.close()
        campaign._lock.close()
    resumed = Campaign.open(folder)
    try:
        # every journaled result told exactly once: the snapshot's and the re-told ones
        assert resumed.optimizer.n_observations == 30 and resumed._told == set(range(30))
        values = sorted(o.value for o in resumed.optimizer.observations)
        assert values == [400.0 + i for i in range(30)]
        _finish(resumed, 5)
        resumed._persist(force=True)
    finally:
        resumed.close()
    assert [int(r["trial_id"]) for r in _rows(folder)] == list(range(35))
    assert {r["status"] for r in _rows(folder)} == {"complete"}


def test_snapshot_period_keeps_the_amortised_rewrite_cost_flat():
    # rewriting a table of n rows every snapshot_every(n) events: rows written per event stay
    # bounded (<= 10) at any size, and small campaigns still snapshot often
    for n in (1, 10, 100, 1000, 5000, 100_000):
        assert n / snapshot_every(n) <= 10
    assert snapshot_every(100) == 20
