"""Benchmark multi-fidelity BO against the single-fidelity campaign: CPU to reach its optimum.

Problems with a known top-fidelity optimum, both from BoTorch and both *biased* at the low
level (a method that trusts cheap values blindly lands off the true optimum):
- ``branin``: AugmentedBranin (maximising its negative; optimum -0.397887 at s = 1); at s = 0.5
  its minimisers move (x2 at x1 = pi shifts from 2.28 to 1.78);
- ``hartmann``: AugmentedHartmann, 6 design dimensions (negated: optimum 3.32237 at s = 1).
Two levels, s = 0.5 and s = 1, costing ``--cost-cpu-s`` CPU-seconds per evaluation (default
5 and 45: one 32^3 cube with the job start-up, and a cs3 paper-profile design, two 128^3 cubes
and the 4680 cell at 200 W, ~45 CPU-s; docs/optimisers.md).

All arms get the same evaluation budget (``--budget-top`` top-level evaluations' worth) and the
same seeds, in the same run; the multi-fidelity arms are also capped at ``--max-evaluations``:
- ``single``: the default ``botorch`` back-end (GP + qLogNEI), every evaluation at s = 1;
- ``mfkg`` / ``two_step``: the ``multi_fidelity`` back-end with that ``acquisition``, until the
  budget less one top evaluation is spent, then its ``recommend()`` evaluated at s = 1 (as a
  campaign does).
The CPU an arm has spent after each evaluation is the modelled evaluation cost plus the ask's
measured CPU (this process, one thread: every arm measured the same way, the single-fidelity arm
the anchor). Reported per arm: the true top-fidelity value of the final recommendation (single:
its best observation), and the CPU-s at which each seed's incumbent (best top-level observation,
the confirmation included) first reached the single-fidelity optimum within its seed spread
(mean - sd over seeds), and for the multi-fidelity arms the regret of that incumbent (what a
campaign reports). Each (problem, seed, arm) is cached in ``--out`` (a rerun continues), with
the optimiser's state before the confirmation: a rerun after a change of ``recommend_sd``'s
default replays only the confirmation.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_multi_fidelity.py --out bench_mf \\
        --problem branin --arms single,two_step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from botorch.test_functions.multi_fidelity import AugmentedBranin, AugmentedHartmann  # noqa: E402

from bayes.multi_fidelity import FIDELITY_KEY, MultiFidelityOptimizer  # noqa: E402
from bayes.optimizer import make_optimizer, optimizer_from_state  # noqa: E402
from bayes.space import Space  # noqa: E402

LEVEL_S = (0.5, 1.0)
RECOMMEND_SD = MultiFidelityOptimizer.OPTIONS["recommend_sd"]
PROBLEMS = {
    "branin": (AugmentedBranin(negate=True), -0.397887,
               Space(bounds={"x1": (-5.0, 10.0), "x2": (0.0, 15.0)})),
    "hartmann": (AugmentedHartmann(negate=True), 3.32237,
                 Space(bounds={f"x{i}": (0.0, 1.0) for i in range(1, 7)})),
}


def value(problem: str, point: dict, s: float) -> float:
    function, _, space = PROBLEMS[problem]
    row = [point[name] for name in space.names] + [s]
    return float(function(torch.tensor([row], dtype=torch.float64)))


def single_fidelity(problem: str, seed: int, budget_top: int, costs: tuple) -> dict:
    space = PROBLEMS[problem][2]
    opt = make_optimizer(space, backend="botorch", seed=seed, n_initial=max(4, space.dim))
    trace = []  # (CPU-s: evaluations modelled + asks measured, incumbent true value)
    spent, ask_cpu, best = 0.0, 0.0, -float("inf")
    for _ in range(budget_top):
        started = time.process_time()
        [point] = opt.ask(1)
        ask_cpu += time.process_time() - started
        y = value(problem, point, 1.0)
        opt.tell(point, y)
        spent += costs[-1]
        best = max(best, y)
        trace.append((spent + ask_cpu, best))
    return {"final": best, "trace": trace, "ask_cpu_s": ask_cpu, "eval_cpu_s": spent,
            "n_evaluations": len(trace)}


def multi_fidelity(problem: str, seed: int, budget_top: int, costs: tuple, acquisition: str,
                   max_evaluations: int) -> dict:
    space = PROBLEMS[problem][2]
    opt = make_optimizer(space, backend="multi_fidelity", seed=seed,
                         n_initial=max(6, space.dim + 2), fidelity_costs=list(costs),
                         acquisition=acquisition)
    budget = budget_top * costs[-1]
    trace, levels = [], []
    spent, ask_cpu, best = 0.0, 0.0, -float("inf")
    while True:
        started = time.process_time()
        [point] = opt.ask(1)
        ask_cpu += time.process_time() - started
        level = point[FIDELITY_KEY]
        if (spent + costs[level] + costs[-1] > budget + 1e-9
                or len(levels) + 1 >= max_evaluations):
            break  # keep the last top-level evaluation for the confirmation
        y = value(problem, point, LEVEL_S[level])
        opt.tell(point, y)
        spent += costs[level]
        levels.append(level)
        if level == len(LEVEL_S) - 1:
            best = max(best, y)
        trace.append((spent + ask_cpu, best))
    state = opt.state_dict()  # what recommend() saw: a later recommendation rule replays it
    result = {"trace": trace, "ask_cpu_s": ask_cpu, "eval_cpu_s": spent, "levels": levels,
              "n_evaluations": len(levels) + 1, "state": state}
    return confirm(problem, result, costs)


def confirm(problem: str, result: dict, costs: tuple) -> dict:
    """The campaign's last evaluation: ``recommend()`` on the saved state, evaluated at s = 1.

    Replayed on a cached result whose recommendation was made with other ``recommend_sd``
    (the evaluations before it are the same: the recommendation never feeds back)."""
    opt = optimizer_from_state(PROBLEMS[problem][2], result["state"])
    opt.options["recommend_sd"] = RECOMMEND_SD
    trace = [tuple(row) for row in result["trace"]]
    ask_cpu, spent = result["ask_cpu_s"], result["eval_cpu_s"]
    if "final" in result:  # undo the old confirmation (its CPU, where it was recorded)
        trace = trace[:-1]
        ask_cpu -= result.get("recommend_cpu_s", 0.0)
        spent -= costs[-1]
    best = max([b for _, b in trace], default=-float("inf"))
    started = time.process_time()
    final_point = opt.recommend()
    recommend_cpu = time.process_time() - started
    final = value(problem, final_point, 1.0)
    ask_cpu += recommend_cpu
    spent += costs[-1]
    best = max(best, final)
    trace.append((spent + ask_cpu, best))
    return {**result, "final": final, "incumbent": best, "trace": trace, "ask_cpu_s": ask_cpu,
            "eval_cpu_s": spent, "recommendation": final_point, "recommend_cpu_s": recommend_cpu,
            "recommend_sd": opt.options["recommend_sd"]}


def cpu_to_reach(trace: list, target: float) -> float | None:
    for cpu, best in trace:
        if best >= target:
            return round(cpu, 1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="branin")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", default="single,two_step",
                        help="comma-separated: single, mfkg, two_step")
    parser.add_argument("--budget-top", type=int, default=10,
                        help="evaluation budget, in top-level evaluations")
    parser.add_argument("--cost-cpu-s", type=float, nargs=2, default=(5.0, 45.0),
                        metavar=("LOW", "TOP"), help="CPU-s of one evaluation per level")
    parser.add_argument("--max-evaluations", type=int, default=25,
                        help="cap on multi-fidelity evaluations (each ask costs CPU-seconds)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    costs = tuple(args.cost_cpu_s)
    arms = args.arms.split(",")
    unknown = set(arms) - {"single", "mfkg", "two_step"}
    if unknown:
        parser.error(f"--arms: unknown {sorted(unknown)}; accepted: single, mfkg, two_step")
    results: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for seed in range(args.seeds):
        for arm in arms:
            path = args.out / f"{args.problem}_{arm}_seed{seed}.json"
            if path.exists():
                result = json.loads(path.read_text())
                if arm != "single" and result.get("recommend_sd") != RECOMMEND_SD:
                    result = confirm(args.problem, result, costs)  # made with another rule
                    path.write_text(json.dumps(result))
                results[arm][seed] = result
                continue
            if arm == "single":
                result = single_fidelity(args.problem, seed, args.budget_top, costs)
            else:
                result = multi_fidelity(args.problem, seed, args.budget_top, costs, arm,
                                        args.max_evaluations)
            path.write_text(json.dumps(result))
            results[arm][seed] = result
            print(f"{args.problem} seed {seed} {arm}: final {result['final']:.4f} "
                  f"ask CPU {result['ask_cpu_s']:.1f} s", flush=True)
    optimum = PROBLEMS[args.problem][1]
    single = [r["final"] for r in results["single"].values()] if "single" in results else []
    target = (statistics.mean(single) - (statistics.stdev(single) if len(single) > 1 else 0.0)
              if single else None)
    summary = {"problem": args.problem, "optimum": optimum, "costs_cpu_s": costs,
               "budget_top": args.budget_top, "target": target, "arms": {}}
    for arm, rows in results.items():
        summary["arms"][arm] = {
            "final_regret": [round(optimum - r["final"], 4) for r in rows.values()],
            "cpu_s_to_target": [cpu_to_reach(r["trace"], target) if target is not None
                                else None for r in rows.values()],
            "ask_cpu_s": [round(r["ask_cpu_s"], 1) for r in rows.values()],
            "eval_cpu_s": [r["eval_cpu_s"] for r in rows.values()],
            "evaluations": [r["n_evaluations"] for r in rows.values()],
            **({"low_level_share": [round(r["levels"].count(0) / max(1, len(r["levels"])), 2)
                                    for r in rows.values()],
                # what the campaign reports: its best top-level trial, the confirmation included
                "incumbent_regret": [round(optimum - r["incumbent"], 4) for r in rows.values()]}
               if arm != "single" else {}),
        }
    (args.out / f"summary_{args.problem}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
