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
3. ``--part refit``: ask(8, 56 pending) at 1008 observations (as the kept ask of part 1: the
   local GP) when a refit is due (kept hyper-parameters from 907): with the refit in the
   background, after it, fitting cold (the anchor), and with the refit inside the ask, from one
   saved state (``refit_due``).
4. ``--part switch``: ask(8, 56 pending) at 999 / 1000 / 1001 / 1008 observations, on both
   sides of the switch to the local model, refit due and between refits (``across_switch``).
5. ``--part method``: ask(4, 62 pending) (64 workers) at 1000 and 5000 observations, Thompson
   sampling (the default for 64 in flight) against sequential qLogNEI (``batch_method``).

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


def _two_asks(n_obs: int, q: int, n_pending: int, seed: int) -> dict:
    """An optimiser told `n_obs` observations asks (q, n_pending pending): the first ask (its
    hyper-parameters are due: a fit), then, after 8 more observations, the same ask again with
    the kept hyper-parameters. Returns both costs, the second batch and the state the second
    ask started from (to re-run it with other options)."""
    problem, points, values = _data(n_obs + n_pending + 8, seed)
    # 8 + 56 = 64 in flight would be Thompson sampling by default: parts 1 and 3 measure the
    # sequential qLogNEI path (what fewer points in flight get)
    opt = make_optimizer(problem.space, "botorch", seed=0,
                         thompson_threshold=65 if q + n_pending == 64 else 64)
    opt.tell(points[:n_obs], values[:n_obs])
    pending = points[n_obs:n_obs + n_pending]
    _, first = _cpu(lambda: opt.ask(q, pending=pending))
    refit_first = opt.last_refit
    opt.tell(points[n_obs + n_pending:], values[n_obs + n_pending:])
    state = json.loads(json.dumps(opt.state_dict()))
    batch, second = _cpu(lambda: opt.ask(q, pending=pending))
    return {"problem": problem, "points": points, "values": values, "opt": opt,
            "pending": pending, "state": state, "batch": batch,
            "row": {"n_obs": n_obs, "first_ask_cpu_s": first, "first_refit": refit_first,
                    "kept_ask_cpu_s": second, "kept_refit": opt.last_refit,
                    "method": opt.last_ask_method, "train_size": opt.last_train_size}}


def _rerun(run: dict, q: int, options: dict) -> tuple[list[dict], float]:
    """The second ask again, from the same state, with `options` changed."""
    state = json.loads(json.dumps(run["state"]))
    state["options"].update(options)
    again = optimizer_from_state(run["problem"].space, state)
    return _cpu(lambda: again.ask(q, pending=run["pending"]))


def small_batch(n_obs: int, variants: dict[str, dict]) -> dict:
    run = _two_asks(n_obs, 8, 56, 1)
    problem, points, values = run["problem"], run["points"], run["values"]
    X = problem.space.to_unit_many(points[:n_obs])
    _, anchor = _cpu(lambda: fit_gp(X, np.asarray(values[:n_obs]).reshape(-1, 1), None))
    best = max(values[:n_obs] + values[n_obs + 56:])

    def quality(batch):
        scores = [problem.objective(p) for p in batch]
        return {"batch_mean": float(np.mean(scores)), "batch_best": float(np.max(scores))}

    out = {**run["row"], "anchor_cold_fit_cpu_s": anchor, "best_observed": best,
           **quality(run["batch"])}
    for name, options in variants.items():  # the same kept ask with other options
        batch, cpu = _rerun(run, 8, options)
        out[f"variant_{name}"] = {"options": options, "cpu_s": cpu, **quality(batch)}
    return out


def _quality(problem, batch, best_unit) -> dict:
    values = [problem.objective(p) for p in batch]
    unit = problem.space.to_unit_many(batch)
    distance = np.linalg.norm(unit - best_unit, axis=1)
    return {"batch_mean": float(np.mean(values)), "batch_best": float(np.max(values)),
            "mean_distance_to_best_obs": float(np.mean(distance))}


def large_batch(n_obs: int) -> dict:
    run = _two_asks(n_obs, 256, 256, 2)
    problem, opt = run["problem"], run["opt"]
    best_point, best_value = opt.best()
    best_unit = problem.space.to_unit(best_point)
    # the old candidate set, same kept hyper-parameters
    global_batch, global_cpu = _rerun(run, 256, {"global_share": 1.0})
    return {**run["row"], "best_observed": best_value, "optimum": PROBLEMS["hartmann6"].optimum,
            "trust_region": _quality(problem, run["batch"], best_unit),
            "global_sobol": {**_quality(problem, global_batch, best_unit), "cpu_s": global_cpu}}


def refit_due(n_obs: int) -> dict:
    """ask(8, 56 pending) at ``n_obs`` observations whose kept hyper-parameters were fitted at
    0.9 ``n_obs`` (a refit is due), all from one saved state: the ask with the refit in the
    background (``background_refit``; its refit then run on its own and timed), the same ask
    with the refit inside it (``"off"``, the old cost), the ask after the background refit
    with its new hyper-parameters (between refits), and the anchor: the same ask fitting cold
    (no kept hyper-parameters). Quality of each batch: its mean and best objective."""
    from bayes.surrogate import DeferredExecutor

    problem, points, values = _data(n_obs + 56, 3)
    first = int(0.9 * n_obs)
    opt = make_optimizer(problem.space, "botorch", seed=0, background_refit="off",
                         thompson_threshold=65)  # qLogNEI, as part 1
    opt.tell(points[:first], values[:first])
    opt.ask(1)  # hyper-parameters fitted at 0.9 n_obs (one cheap ask)
    opt.tell(points[first:n_obs], values[first:n_obs])
    state = json.loads(json.dumps(opt.state_dict()))
    pending = points[n_obs:]

    def from_state(**options):
        again = json.loads(json.dumps(state))
        again["options"].update(options)
        return optimizer_from_state(problem.space, again)

    def quality(batch):
        scores = [problem.objective(p) for p in batch]
        return {"batch_mean": float(np.mean(scores)), "batch_best": float(np.max(scores))}

    out = {"n_obs": n_obs, "kept_fitted_at": first,
           "best_observed": float(max(values[:n_obs]))}
    background = from_state(background_refit="when_ready")
    background.refit_executor = executor = DeferredExecutor()
    batch, cpu = _cpu(lambda: background.ask(8, pending=pending))
    assert executor.queued, "the refit was not due"
    out["due_ask_background"] = {"cpu_s": cpu, **quality(batch)}
    print(json.dumps(out), flush=True)
    future, refit_cpu = _cpu(executor.run_next)
    out["background_refit_cpu_s"] = refit_cpu
    out["background_refit_thread_cpu_s"] = future.result()[1]
    batch, cpu = _cpu(lambda: background.ask(8, pending=pending))  # adopts the new ones
    out["ask_with_new_hyper"] = {"cpu_s": cpu, "fitted_at": background.hyper["objective"].fitted_at,
                                 **quality(batch)}
    cold_state = json.loads(json.dumps(state))
    cold_state["counters"]["hyper"] = {}
    cold = optimizer_from_state(problem.space, cold_state)
    batch, cpu = _cpu(lambda: cold.ask(8, pending=pending))
    out["anchor_cold_fit_ask"] = {"cpu_s": cpu, "refit": cold.last_refit, **quality(batch)}
    print(json.dumps(out), flush=True)  # so far (a loaded machine may stop the rest)
    inline = from_state(background_refit="off")
    batch, cpu = _cpu(lambda: inline.ask(8, pending=pending))
    out["due_ask_inline_refit"] = {"cpu_s": cpu, **quality(batch)}
    return out


def _from_state(problem, state: dict, **options):
    again = json.loads(json.dumps(state))
    again["options"].update(options)
    return optimizer_from_state(problem.space, again)


def across_switch(sizes: list[int], fitted_at: int, old_budget_at: int | None) -> dict:
    """ask(8, 56 pending) on both sides of the switch to the local model (``max_train`` =
    1000): at each size, from kept hyper-parameters fitted at ``fitted_at`` (a refit is due),
    the due ask (refit in the background, as the async controller runs it) and, with the
    refit's values (fitted at 1000), the ask between refits. ``thompson_threshold`` 65 keeps
    these asks sequential qLogNEI (the default picks Thompson sampling for 8 + 56 = 64 in
    flight, also measured between refits). Anchor in the same run: one cold exact-GP fit on
    1000 observations. ``old_budget_at``: the ask between refits at that size again with the
    search budget before (2048 raw / 20 restarts whatever the size)."""
    from bayes.surrogate import DeferredExecutor

    problem, points, values = _data(max(sizes) + 56, 4)
    pending = points[-56:]
    opt = make_optimizer(problem.space, "botorch", seed=0, background_refit="off")
    opt.tell(points[:fitted_at], values[:fitted_at])
    opt.ask(1)  # hyper-parameters fitted at fitted_at (an ask of one point)
    base = json.loads(json.dumps(opt.state_dict()))

    def quality(batch):
        scores = [problem.objective(p) for p in batch]
        return {"batch_mean": float(np.mean(scores)), "batch_best": float(np.max(scores))}

    def state_at(n: int, hyper: dict | None = None) -> dict:
        o = optimizer_from_state(problem.space, json.loads(json.dumps(base)))
        o.tell(points[fitted_at:n], values[fitted_at:n])
        state = json.loads(json.dumps(o.state_dict()))
        if hyper is not None:
            state["counters"]["hyper"]["objective"] = {**hyper, "fitted_at": n}
        return state

    X = problem.space.to_unit_many(points[:1000])
    _, anchor = _cpu(lambda: fit_gp(X, np.asarray(values[:1000]).reshape(-1, 1), None))
    out = {"anchor_cold_fit_1000_cpu_s": anchor, "fitted_at": fitted_at,
           "best_observed": {n: float(max(values[:n])) for n in sizes}}
    print(json.dumps(out), flush=True)
    refit = None
    for n in sizes:
        due = _from_state(problem, state_at(n), background_refit="when_ready",
                          thompson_threshold=65)
        due.refit_executor = executor = DeferredExecutor()
        batch, cpu = _cpu(lambda due=due: due.ask(8, pending=pending))
        row = {"n_obs": n, "due_ask": {"cpu_s": cpu, "method": due.last_ask_method,
                                       "refit_started": bool(executor.queued),
                                       "train_size": due.last_train_size, **quality(batch)}}
        if n == 1000:
            future, refit_cpu = _cpu(executor.run_next)
            refit = {"values": future.result()[0], "likelihood": "inferred"}
            out["refit_at_1000_cpu_s"] = refit_cpu
        out[f"n{n}"] = row
        print(json.dumps(row), flush=True)
    for n in sizes:
        state = state_at(n, refit)
        kept = _from_state(problem, state, thompson_threshold=65)
        batch, cpu = _cpu(lambda kept=kept: kept.ask(8, pending=pending))
        out[f"n{n}"]["kept_ask"] = {"cpu_s": cpu, "method": kept.last_ask_method,
                                    "refit": kept.last_refit, **quality(batch)}
        default = _from_state(problem, state)
        batch, cpu = _cpu(lambda default=default: default.ask(8, pending=pending))
        out[f"n{n}"]["default_kept_ask"] = {"cpu_s": cpu, "method": default.last_ask_method,
                                            **quality(batch)}
        print(json.dumps(out[f"n{n}"]), flush=True)
        if n == old_budget_at:
            old = _from_state(problem, state, thompson_threshold=65, full_search_until=10**9)
            batch, cpu = _cpu(lambda old=old: old.ask(8, pending=pending))
            out[f"n{n}"]["kept_ask_old_budget"] = {"cpu_s": cpu, **quality(batch)}
            print(json.dumps(out[f"n{n}"]["kept_ask_old_budget"]), flush=True)
    return out


def batch_method(sizes: list[int], q: int, n_pending: int) -> dict:
    """ask(q, n_pending) with q + n_pending >= 64 in flight (64 workers): Thompson sampling (the
    default now) against sequential qLogNEI (``thompson_threshold`` out of reach, the choice
    before: 62 pending were below the threshold), from one state with kept hyper-parameters."""
    out = {}
    for n in sizes:
        problem, points, values = _data(n + n_pending, 5)
        opt = make_optimizer(problem.space, "botorch", seed=0, background_refit="off")
        opt.tell(points[:n], values[:n])
        opt.ask(1)  # the hyper-parameters, kept
        state = json.loads(json.dumps(opt.state_dict()))
        pending = points[n:]
        row = {"best_observed": float(max(values[:n]))}
        for name, options in (("thompson", {}), ("qlognei", {"thompson_threshold": 10**9})):
            o = _from_state(problem, state, **options)
            batch, cpu = _cpu(lambda o=o, pending=pending: o.ask(q, pending=pending))
            scores = [problem.objective(p) for p in batch]
            row[name] = {"cpu_s": cpu, "method": o.last_ask_method,
                         "batch_mean": float(np.mean(scores)), "batch_best": float(np.max(scores))}
        out[f"n{n}"] = row
        print(json.dumps({f"n{n}": row}), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="250 and 500 observations")
    parser.add_argument("--part", choices=["both", "ask8", "ask256", "refit", "switch", "method"],
                        default="both",
                        help="run one part only (e.g. two processes side by side)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help='re-run the kept ask(8, 56) with options changed, e.g. '
                             'old=\'{"large_from": 1000000}\' (repeatable)')
    args = parser.parse_args(argv)
    small_n, large_n = (250, 500) if args.small else (1000, 2000)
    results = {}
    if args.part in ("both", "ask8"):
        variants = dict(_variant(text) for text in args.variant)
        results["ask8_pending56"] = small_batch(small_n, variants)
    if args.part == "refit":
        # 8 beyond the size, as the kept ask of part 1: the local GP and its search
        results["ask8_pending56_refit_due"] = refit_due(small_n + 8)
    if args.part == "switch":
        results["ask8_pending56_across_switch"] = across_switch([999, 1000, 1001, 1008], 900, 1000)
    if args.part == "method":
        results["ask4_pending62_method"] = batch_method([1000, 5000], 4, 62)
    if args.part in ("both", "ask256"):
        results["ask256_pending256"] = large_batch(large_n)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _variant(text: str) -> tuple[str, dict]:
    name, _, options = text.partition("=")
    parsed = json.loads(options)
    if not name or not isinstance(parsed, dict):
        raise SystemExit(f"--variant wants NAME=JSON-object; got {text!r}")
    return name, parsed


if __name__ == "__main__":
    main()
