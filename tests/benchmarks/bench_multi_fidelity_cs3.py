"""Multi-fidelity BO on cs3's energy cell: CPU to reach the single-fidelity campaign's optimum.

Real evaluations (jobs.evaluate: procedural structure, transport solves, PyBaMM 4680 cell at
10 W, no Ragone sweep), in this process, one thread, CPU-seconds by ``time.process_time``:

1. Anchor (same run): designs of the documented single-fidelity campaign (``--single``: its
   trials.csv, e.g. docs/data/case-studies/cs3/seed_0/cs3, the cs3 paper profile: two 96^3 cubes)
   re-evaluated here under their own trial ids (so their own cube seeds) at the top level and at
   the cheap one: the CPU of one evaluation per level now, which is also the declared cost of
   each level for the multi-fidelity optimiser, and whether today's code reproduces the
   documented values.
2. Multi-fidelity arm: the ``multi_fidelity`` back-end (``--acquisition``, default
   ``two_step``), two levels (``--low N VOXELS``, default one 32^3 cube; the top level is the
   paper profile's), its initial design then its own choices until ``--max-evaluations`` less
   the confirmations or the CPU budget (``--budget-top`` top-level evaluations' worth) is
   spent; then its ``confirmations()`` (``--confirm``: the recommendation, and by default the
   best cheap-level design too) evaluated at the top level, as a campaign does.
3. The single-fidelity campaign's cost to the target: the evaluations each documented seed
   needed (trial order) times the anchor's CPU per top-level evaluation, plus the ``botorch``
   back-end's asks replayed on its own observations here (``--replay-asks``).

Target: the single-fidelity campaigns' final bests (all ``--single`` tables), mean - sd. The
multi-fidelity arm reaches it when one of its top-level values (the confirmation included) does.
Every evaluation is cached in ``--out`` with the optimiser's state, so a killed run continues:

    OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true nice -n 5 python \\
        tests/benchmarks/bench_multi_fidelity_cs3.py --out bench_mf_cs3 --seeds 0 \\
        --single docs/data/case-studies/cs3/seed_{0,1,2}/cs3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

from bayes.multi_fidelity import FIDELITY_KEY, MultiFidelityOptimizer  # noqa: E402
from bayes.optimizer import make_optimizer, optimizer_from_state  # noqa: E402
from hpc.campaign.config import load_campaign  # noqa: E402
from jobs.evaluate import evaluate  # noqa: E402

#: trial ids of this benchmark's own evaluations start here (the anchor uses the documented ids)
OWN_TRIALS = 100_000


def specs(low: tuple[int, int]) -> tuple[object, list[dict]]:
    config = load_campaign("cs3", profile="paper")
    top = config.to_spec_dict()
    top["cell"]["ragone_powers_W"] = []   # the objective only
    cheap = json.loads(json.dumps(top))
    cheap["fidelity"]["n_cubes"], cheap["fidelity"]["cube_voxels"] = low
    return config, [cheap, top]


def timed_evaluation(folder: Path, trial_id: int, params: dict, spec: dict) -> dict:
    """One evaluation, its CPU-s. One folder per level: a stored trial id is not evaluated
    again (jobs are idempotent), so the levels must not share one. An evaluation that raises
    is a failed trial, as in a campaign: its reason is kept (``failed``), its CPU counted."""
    started = time.process_time()
    try:
        result = evaluate(str(folder), trial_id, params, spec)
    except (ValueError, RuntimeError) as error:
        return {"value": None, "feasible": False, "noise_var": None, "failed": str(error),
                "cpu_s": time.process_time() - started}
    return {"value": result.objective.value, "feasible": bool(result.objective.feasible),
            "noise_var": result.noise_var, "cpu_s": time.process_time() - started}


def read_table(path: Path, names: list[str]) -> list[dict]:
    with open(path / "trials.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "complete"]
    rows.sort(key=lambda r: int(r["trial_id"]))
    return [{"trial_id": int(r["trial_id"]), "params": {n: float(r[n]) for n in names},
             "value": float(r["objective"]) if r["feasible"] == "True" else None,
             "noise_var": float(r["objective_noise_var"]) if r["objective_noise_var"] else None}
            for r in rows]


def evaluations_to(values: list, target: float) -> int | None:
    best = None
    for i, value in enumerate(values):
        if value is not None:
            best = value if best is None else max(best, value)
        if best is not None and best >= target:
            return i + 1
    return None


def cached(path: Path, make):
    if path.exists():
        return json.loads(path.read_text())
    data = make()
    path.write_text(json.dumps(data))
    return data


def anchor(out: Path, folder: Path, table: list[dict], trial_ids: list[int], level_specs,
           fixed: dict) -> dict:
    rows = {}
    for trial_id in trial_ids:
        row = next(r for r in table if r["trial_id"] == trial_id)
        params = {**fixed, **row["params"]}
        for level, spec in enumerate(level_specs):
            key = f"anchor_t{trial_id}_l{level}"
            rows[key] = cached(out / f"{key}.json", lambda t=trial_id, p=params, s=spec, lv=level:
                               timed_evaluation(folder / f"level{lv}", t, p, s))
            rows[key]["documented"] = row["value"] if level == len(level_specs) - 1 else None
    cpu = [[rows[f"anchor_t{t}_l{lv}"]["cpu_s"] for t in trial_ids]
           for lv in range(len(level_specs))]
    return {"rows": rows, "cpu_s_per_level": [statistics.mean(c) for c in cpu]}


def multi_fidelity_arm(out: Path, folder: Path, seed: int, level_specs, costs, config,
                       acquisition: str, max_evaluations: int, budget_cpu_s: float,
                       confirm: str) -> dict:
    space = config.space.to_bayes_space()
    fixed = config.space.fixed()
    path = out / f"mf_{acquisition}_{confirm}_seed{seed}.json"
    run = json.loads(path.read_text()) if path.exists() else {"evaluations": [], "state": None}
    opt = (optimizer_from_state(space, run["state"]) if run["state"] else
           make_optimizer(space, backend="multi_fidelity", seed=seed, fidelity_costs=costs,
                          acquisition=acquisition, confirm=confirm))
    top = len(level_specs) - 1
    while "confirmations" not in run:
        spent = sum(e["cpu_s"] + e["ask_cpu_s"] for e in run["evaluations"])
        n = len(run["evaluations"])
        started = time.process_time()
        last = opt.n_confirmations
        if n + last >= max_evaluations or spent + last * costs[-1] > budget_cpu_s:
            points = opt.confirmations()   # the campaign's last evaluations, at the top level
            key = "confirmation"
        else:
            points = opt.ask(1)
            key = "evaluation"
        ask_cpu = time.process_time() - started
        rows = []
        for i, point in enumerate(points):
            level = int(point[FIDELITY_KEY])
            design = {k: v for k, v in point.items() if k != FIDELITY_KEY}
            done = timed_evaluation(folder / f"level{level}", OWN_TRIALS + 1000 * seed + n + i,
                                    {**fixed, **design}, level_specs[level])
            rows.append({"design": design, "level": level,
                         "ask_cpu_s": ask_cpu if i == 0 else 0.0, **done})
            print(f"seed {seed} {key} {n + i}: level {level} value {done['value']} "
                  f"cpu {done['cpu_s']:.1f} ask {rows[-1]['ask_cpu_s']:.1f}", flush=True)
        if key == "confirmation":
            run["confirmations"] = rows
        else:
            [row], [point] = rows, points
            if "failed" in row:   # what the campaign tells of a failed trial
                opt.tell_failed([point], [row["failed"]])
            else:
                opt.tell(point, row["value"], noise_var=row["noise_var"],
                         feasible=row["feasible"])
            run["evaluations"].append(row)
            run["state"] = opt.state_dict()
        path.write_text(json.dumps(run))
    rows = [*run["evaluations"], *run["confirmations"]]
    trace, cpu, best = [], 0.0, None
    for row in rows:
        cpu += row["cpu_s"] + row["ask_cpu_s"]
        if row["level"] == top and row["value"] is not None:
            best = row["value"] if best is None else max(best, row["value"])
        trace.append((cpu, best))
    return {"trace": trace, "levels": [r["level"] for r in rows],
            "failed": [(i, r["level"], r["failed"]) for i, r in enumerate(rows) if "failed" in r],
            "confirmations": run["confirmations"],
            "ask_cpu_s": sum(r["ask_cpu_s"] for r in rows),
            "eval_cpu_s": sum(r["cpu_s"] for r in rows)}


def replay_asks(table: list[dict], config, seed: int, upto: int) -> float:
    """CPU of the single-fidelity campaign's own back-end asking after each of its first
    ``upto`` observations (its Sobol design costs nothing; asks one at a time here, where the
    campaign asked in pairs, which is what one ask costs either way)."""
    opt = make_optimizer(config.space.to_bayes_space(), backend="botorch", seed=seed,
                         n_initial=config.optimizer.n_initial)
    total = 0.0
    for i, row in enumerate(table[:upto]):
        if i >= config.optimizer.n_initial:
            started = time.process_time()
            opt.ask(1)
            total += time.process_time() - started
        opt.tell(row["params"], row["value"], noise_var=row["noise_var"],
                 feasible=row["value"] is not None)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--single", type=Path, nargs="+", required=True,
                        help="the single-fidelity campaigns' folders (trials.csv), seeds 0, 1, ..")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--low", type=int, nargs=2, default=(1, 32), metavar=("N", "VOXELS"))
    parser.add_argument("--acquisition", default="two_step", choices=("two_step", "mfkg"))
    parser.add_argument("--confirm", default=MultiFidelityOptimizer.OPTIONS["confirm"],
                        choices=MultiFidelityOptimizer.CONFIRMS,
                        help="what the last evaluations confirm at the top level")
    parser.add_argument("--anchor-trials", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-evaluations", type=int, default=24)
    parser.add_argument("--budget-top", type=float, default=12.0,
                        help="CPU budget, in top-level evaluations (anchor CPU)")
    parser.add_argument("--replay-asks", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config, level_specs = specs(tuple(args.low))
    names = sorted(config.space.bounds())
    tables = [read_table(folder, names) for folder in args.single]
    finals = [max(r["value"] for r in t if r["value"] is not None) for t in tables]
    target = statistics.mean(finals) - (statistics.stdev(finals) if len(finals) > 1 else 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # first calls (cell model build, numba's kernel loads, which only the top level's
        # cube size uses): at every level, on no arm
        warm = cached(args.out / "warm_up.json", lambda: [timed_evaluation(
            folder / f"warm{level}", OWN_TRIALS - 1,
            {**config.space.fixed(), **tables[0][0]["params"]}, spec)
            for level, spec in enumerate(level_specs)])
        ref = anchor(args.out, folder, tables[0], args.anchor_trials, level_specs,
                     config.space.fixed())
        costs = [round(c, 3) for c in ref["cpu_s_per_level"]]
        arms = {seed: multi_fidelity_arm(args.out, folder, seed, level_specs, costs, config,
                                         args.acquisition, args.max_evaluations,
                                         args.budget_top * costs[-1], args.confirm)
                for seed in args.seeds}
    single_evals = [evaluations_to([r["value"] for r in t], target) for t in tables]
    asks = ([cached(args.out / f"replay_asks_seed{s}.json",
                    lambda s=s, t=t, n=n: {"cpu_s": replay_asks(t, config, s, n)})["cpu_s"]
             if n else None for s, (t, n) in enumerate(zip(tables, single_evals, strict=True))]
            if args.replay_asks else [None] * len(tables))
    summary = {
        "target": target, "single_finals": finals, "low_level": list(args.low),
        "warm_up_cpu_s": [w["cpu_s"] for w in warm], "anchor": ref, "costs_cpu_s": costs,
        "single_evaluations_to_target": single_evals,
        "single_cpu_s_to_target_evaluations": [n * costs[-1] if n else None
                                               for n in single_evals],
        "single_ask_cpu_s_to_target": asks,
        "mf": {seed: {
            "cpu_s_to_target": next((round(c, 1) for c, b in arm["trace"]
                                     if b is not None and b >= target), None),
            "evaluations_to_target": next((i + 1 for i, (_, b) in enumerate(arm["trace"])
                                           if b is not None and b >= target), None),
            "evaluations": len(arm["levels"]), "levels": arm["levels"],
            "failed": arm["failed"],
            "confirmations": arm["confirmations"], "ask_cpu_s": round(arm["ask_cpu_s"], 1),
            "eval_cpu_s": round(arm["eval_cpu_s"], 1), "trace": arm["trace"]}
            for seed, arm in arms.items()},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "mf"}, indent=2))
    for seed, row in summary["mf"].items():
        print(seed, {k: v for k, v in row.items() if k != "trace"})


if __name__ == "__main__":
    main()
