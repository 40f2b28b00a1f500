"""What persistence costs the controller per event as a campaign grows, and what a resume costs.

For each campaign size N (default 100 / 1000 / 5000 finished trials) it builds a real campaign
folder through the controller's own journal path (`Campaign.journal_event` with a real
evaluation result, tests/benchmarks/data/evaluation_result.json, and the optimiser told each
one), then measures in the same run:

- per trial (4 journal events, the tell, the snapshots due), CPU ms over 50 more trials;
- the anchor: what the controller did before snapshots (issue 18) per event at the same size,
  one full `trials.csv` rewrite plus one full optimiser-state save;
- resume: `Campaign.open` on the folder (CPU and wall seconds), with its parts.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_campaign_persistence.py --sizes 100 1000 5000
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tomli_w

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.journal import read_journal
from hpc.campaign.trials import fold_events, write_trials_csv

RESULT = Path(__file__).parent / "data" / "evaluation_result.json"


def _config(path: Path, budget: int) -> Path:
    data = {
        "name": "persistence",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 2, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "optimizer": {"backend": "sobol", "budget": budget, "max_concurrent": 256},
        "resources": {"executor": "local", "dask_workers": 0},
    }
    path.write_text(tomli_w.dumps(data))
    return path


def _finish_trials(campaign: Campaign, params: np.ndarray, template: dict) -> None:
    """Trials through the controller's own path: proposed, submitting, submitted, completed,
    told (`_after_done`), and the snapshots that are due (`_persist`)."""
    for row in params:
        trial_id = len(campaign.trials)
        point = {"am_wt_frac": float(row[0]), "porosity": float(row[1]),
                 "binder_adhesion": 0.5, "mass_loading_mg_cm2": 15.0}
        campaign.journal_event("proposed", trial_id=trial_id, params=point)
        campaign.journal_event("submitting", trial_id=trial_id, attempt=1)
        campaign.journal_event("submitted", trial_id=trial_id, attempt=1,
                               job_id=f"{1000 + trial_id}")
        result = copy.deepcopy(template)
        result.update(trial_id=trial_id, params=point, job_id=f"{1000 + trial_id}")
        result["objective"]["value"] = float(500.0 + 100.0 * row[0] - 50.0 * row[1])
        campaign.journal_event("completed", trial_id=trial_id, result=result)
        campaign._after_done(campaign.trials[trial_id])
        campaign._persist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--more", type=int, default=50, help="trials timed at each size")
    args = parser.parse_args()
    template = json.loads(RESULT.read_text())
    rng = np.random.default_rng(0)
    print(f"{'trials':>7} {'per trial ms':>13} {'before: per trial ms (>=)':>26} {'ratio':>6} "
          f"{'resume CPU s':>13} {'wall s':>7}  parts (journal read / fold / optimiser)")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "run"
            config = load_campaign(_config(Path(tmp) / "c.toml", size + args.more + 10))
            campaign = Campaign.create(config, folder)
            _finish_trials(campaign, rng.uniform([0.86, 0.28], [0.96, 0.42], (size, 2)),
                           template)
            start = time.process_time()
            _finish_trials(campaign, rng.uniform([0.86, 0.28], [0.96, 0.42], (args.more, 2)),
                           template)
            per_trial = (time.process_time() - start) / args.more
            # the anchor: before, every event rewrote trials.csv and saved the whole state
            start = time.process_time()
            for _ in range(3):
                write_trials_csv(folder, campaign.trials, campaign.param_names)
                campaign._save_optimizer()
            before = (time.process_time() - start) / 3
            campaign._persist(force=True)
            campaign.close()

            cpu, wall = time.process_time(), time.perf_counter()
            reopened = Campaign.open(folder)
            resume_cpu, resume_wall = time.process_time() - cpu, time.perf_counter() - wall
            assert len(reopened.trials) == size + args.more
            assert reopened.optimizer.n_observations == size + args.more
            reopened.close()
            t0 = time.process_time()
            events = read_journal(folder)
            t1 = time.process_time()
            fold_events(events)
            t2 = time.process_time()
            from bayes.optimizer import optimizer_from_state

            saved = json.loads((folder / "optimizer_state.json").read_text())
            optimizer_from_state(reopened.space, saved["state"])
            t3 = time.process_time()
        print(f"{size:>7} {per_trial * 1e3:>13.2f} {before * 1e3:>26.1f} "
              f"{before / per_trial:>6.0f} {resume_cpu:>13.2f} {resume_wall:>7.2f}  "
              f"{t1 - t0:.2f} / {t2 - t1:.2f} / {t3 - t2:.2f}")


if __name__ == "__main__":
    main()
