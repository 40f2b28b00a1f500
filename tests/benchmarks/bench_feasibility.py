"""Benchmark: learning infeasibility with a feasibility model vs telling a literal 0.

The problem: maximise ``SHIFT - Branin(x1, x2)`` on [-5, 10] x [0, 15], where the function is
*undefined* (the design is physically infeasible) when ``x1 + x2 < 13``. All three of Branin's
global minima lie in the infeasible region, so the constrained optimum sits on the boundary, next
to the cliff. ``SHIFT`` makes every feasible value positive, so telling 0 for an infeasible design
is exactly what the campaign controller did before feasibility existed (an "energy 0" design
below every real one).

Two methods, both the BoTorch back-end with the same options, seeds and budget, run in the same
process one after the other:

- ``zero``: ``tell(point, 0.0)`` for an infeasible design (the old controller);
- ``feasibility``: ``tell(point, None, feasible=False)`` (objective GP on feasible designs only,
  a feasibility GP as qLogNEI's outcome constraint).

Reported per method: simple regret (constrained optimum minus the best *feasible* value seen)
after 10/20/30 evaluations, and the fraction of infeasible proposals (all evaluations, and after
the initial Sobol design). Batch 1, sequential; the constrained optimum is computed here by a grid
search refined with SLSQP.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_feasibility.py [--seeds 0-4] [--evaluations 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bayes.optimizer import make_optimizer  # noqa: E402
from bayes.space import Space  # noqa: E402

SPACE = Space({"x1": (-5.0, 10.0), "x2": (0.0, 15.0)})
#: Feasible when x1 + x2 >= this.
BOUNDARY = 13.0
#: Above Branin's maximum on the domain (308.1), so every feasible value is > 0.
SHIFT = 310.0
#: Both methods get the same (small, fast) acquisition budget.
OPTIONS = {"n_initial": 6, "num_restarts": 4, "raw_samples": 128, "mc_samples": 32}
METHODS = ("zero", "feasibility")
CHECKPOINTS = (10, 20, 30)


def branin(x1: float, x2: float) -> float:
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def feasible(point: dict[str, float]) -> bool:
    return point["x1"] + point["x2"] >= BOUNDARY


def objective(point: dict[str, float]) -> float:
    return SHIFT - branin(point["x1"], point["x2"])


def constrained_optimum() -> float:
    """Maximum of the objective over the feasible set: grid search, then SLSQP from the best."""
    from scipy.optimize import minimize

    x1, x2 = np.meshgrid(np.linspace(-5, 10, 1501), np.linspace(0, 15, 1501), indexing="ij")
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    values = (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * np.cos(x1) + 10
    values = np.where(x1 + x2 >= BOUNDARY, values, np.inf)
    i = np.unravel_index(np.argmin(values), values.shape)
    result = minimize(
        lambda z: branin(z[0], z[1]),
        [x1[i], x2[i]],
        method="SLSQP",
        bounds=[(-5, 10), (0, 15)],
        constraints=[{"type": "ineq", "fun": lambda z: z[0] + z[1] - BOUNDARY}],
        options={"ftol": 1e-12},
    )
    if not result.success or result.fun > values[i] + 1e-9:
        raise RuntimeError(f"SLSQP did not refine the grid optimum: {result.message}")
    return SHIFT - float(result.fun)


def run(method: str, seed: int, evaluations: int, optimum: float) -> dict:
    optimizer = make_optimizer(SPACE, backend="botorch", seed=seed, **OPTIONS)
    best = -math.inf
    regret: list[float | None] = []
    infeasible: list[bool] = []
    methods: list[str] = []
    points: list[dict[str, float]] = []
    ask_cpu_s = 0.0
    for _ in range(evaluations):
        start = time.process_time()
        point = optimizer.ask(1)[0]
        ask_cpu_s += time.process_time() - start
        methods.append(optimizer.last_ask_method)
        points.append(point)
        if feasible(point):
            value = objective(point)
            best = max(best, value)
            optimizer.tell(point, value)
        elif method == "zero":
            optimizer.tell(point, 0.0)
        else:
            optimizer.tell(point, None, feasible=False)
        infeasible.append(not feasible(point))
        regret.append(None if best == -math.inf else optimum - best)
    return {"regret": regret, "infeasible": infeasible, "methods": methods, "points": points,
            "ask_cpu_s": ask_cpu_s}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| method | seeds | " + " | ".join(f"regret @{k}" for k in CHECKPOINTS)
        + " | infeasible proposals (all) | infeasible after the Sobol design | CPU s per run |",
        "|---|---|" + "---|" * (len(CHECKPOINTS) + 3),
    ]
    for method, runs in results.items():
        cells = []
        for k in CHECKPOINTS:
            at_k = [r["regret"][k - 1] for r in runs if len(r["regret"]) >= k]
            found = [v for v in at_k if v is not None]
            cell = _mean_sd(found) if found else "–"
            if len(found) < len(at_k):
                cell += f" ({len(at_k) - len(found)} without a feasible point)"
            cells.append(cell)
        all_frac = [float(np.mean(r["infeasible"])) for r in runs]
        model = [
            float(np.mean([bad for bad, m in zip(r["infeasible"], r["methods"], strict=True)
                           if m != "sobol"] or [0.0]))
            for r in runs
        ]
        cpu = statistics.mean(r["ask_cpu_s"] for r in runs)
        lines.append(
            f"| {method} | {len(runs)} | " + " | ".join(cells)
            + f" | {_mean_sd(all_frac)} | {_mean_sd(model)} | {cpu:.1f} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += list(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2")
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="also write the runs as JSON here")
    args = parser.parse_args(argv)
    optimum = constrained_optimum()
    print(f"constrained optimum {optimum:.6f} (Branin {SHIFT - optimum:.6f})", flush=True)
    start = time.time()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in _ints(args.seeds):
        for method in METHODS:
            result = run(method, seed, args.evaluations, optimum)
            results[method].append(result)
            last = result["regret"][-1]
            print(f"seed {seed} {method}: regret {last if last is None else round(last, 4)}, "
                  f"infeasible {sum(result['infeasible'])}/{args.evaluations}", flush=True)
    print(f"wall {time.time() - start:.0f} s\n")
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps({"optimum": optimum, "results": results}))


if __name__ == "__main__":
    main()
