"""Benchmark the cost and the batch quality of BoTorch asks on large data sets (run, not timed).

Hartmann-6 (maximising its negative; optimum 3.32237 at x*), observations at uniform random
points, CPU seconds (``time.process_time``, one thread) with the anchor in the same run:

1. ``ask(8, 56 pending)`` at 1000 observations. Anchor: one cold exact-GP fit on the same data
   (what every ask paid before). Measured: the first ask (its hyper-parameters are due: a fit),
   then, after 8 more observations, an ask that re-uses the kept hyper-parameters.
2. ``ask(256, 256 pending)`` at 2000 observations: the local GP (``max_train`` points) and
   Thompson sampling over trust-region candidates, against the same GP and kept hyper-parameters
   drawing from global Sobol candidates (``global_share = 1``, the old candidate set). Quality:
   the batch's mean objective, its best, and its mean unit-cube distance to the best
   observation.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py            # about 3-6 CPU-minutes
    OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py --small    # 250/500 observations
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_optimizers import PROBLEMS  # noqa: E402

from bayes.botorch_backend import fit_gp  # noqa: E402
from bayes.optimizer import make_optimizer, optimizer_from_state  # noqa: E402


def _data(n: int, seed: int):
    problem = PROBLEMS["hartmann6"]
    rng = np.random.default_rng([n, seed])
    points = problem.space.from_unit_many(rng.random((n, 6)))
    return problem, points, [problem.objective(p) for p in points]


def _cpu(call):
    start = time.process_time()
    out = call()
    return out, time.process_time() - start


def small_batch(n_obs: int) -> dict:
    problem, points, values = _data(n_obs + 56 + 8, 1)
    X = problem.space.to_unit_many(points[:n_obs])
    _, anchor = _cpu(lambda: fit_gp(X, np.asarray(values[:n_obs]).reshape(-1, 1), None))
    opt = make_optimizer(problem.space, "botorch", seed=0)
    opt.tell(points[:n_obs], values[:n_obs])
    pending = points[n_obs:n_obs + 56]
    _, first = _cpu(lambda: opt.ask(8, pending=pending))
    refit_first = opt.last_refit
    opt.tell(points[n_obs + 56:], values[n_obs + 56:])
    batch, second = _cpu(lambda: opt.ask(8, pending=pending))
    return {"n_obs": n_obs, "anchor_cold_fit_cpu_s": anchor, "first_ask_cpu_s": first,
            "first_refit": refit_first, "kept_ask_cpu_s": second, "kept_refit": opt.last_refit,
            "method": opt.last_ask_method, "train_size": opt.last_train_size,
            "batch_mean": float(np.mean([problem.objective(p) for p in batch]))}


def _quality(problem, batch, best_unit) -> dict:
    values = [problem.objective(p) for p in batch]
    unit = problem.space.to_unit_many(batch)
    distance = np.linalg.norm(unit - best_unit, axis=1)
    return {"batch_mean": float(np.mean(values)), "batch_best": float(np.max(values)),
            "mean_distance_to_best_obs": float(np.mean(distance))}


def large_batch(n_obs: int) -> dict:
    problem, points, values = _data(n_obs + 256 + 8, 2)
    opt = make_optimizer(problem.space, "botorch", seed=0)
    opt.tell(points[:n_obs], values[:n_obs])
    pending = points[n_obs:n_obs + 256]
    _, first = _cpu(lambda: opt.ask(256, pending=pending))
    refit_first = opt.last_refit
    opt.tell(points[n_obs + 256:], values[n_obs + 256:])
    state = json.loads(json.dumps(opt.state_dict()))
    batch, second = _cpu(lambda: opt.ask(256, pending=pending))
    best_point, best_value = opt.best()
    best_unit = problem.space.to_unit(best_point)
    state["options"]["global_share"] = 1.0  # the old candidate set, same kept hyper-parameters
    glob = optimizer_from_state(problem.space, state)
    global_batch, global_cpu = _cpu(lambda: glob.ask(256, pending=pending))
    return {"n_obs": n_obs, "first_ask_cpu_s": first, "first_refit": refit_first,
            "kept_ask_cpu_s": second, "kept_refit": opt.last_refit,
            "method": opt.last_ask_method, "train_size": opt.last_train_size,
            "best_observed": best_value, "optimum": PROBLEMS["hartmann6"].optimum,
            "trust_region": _quality(problem, batch, best_unit),
            "global_sobol": {**_quality(problem, global_batch, best_unit), "cpu_s": global_cpu}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="250 and 500 observations")
    parser.add_argument("--part", choices=["both", "ask8", "ask256"], default="both",
                        help="run one part only (e.g. two processes side by side)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    small_n, large_n = (250, 500) if args.small else (1000, 2000)
    results = {}
    if args.part in ("both", "ask8"):
        results["ask8_pending56"] = small_batch(small_n)
    if args.part in ("both", "ask256"):
        results["ask256_pending256"] = large_batch(large_n)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
