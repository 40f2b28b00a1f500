"""Benchmark the bayes back-ends side by side: simple regret and CPU cost per ask.

Two parts, both over all chosen back-ends in one run:

1. Regret: Hartmann-6 and Branin (maximising their negatives), ``--evaluations`` (60) evaluations
   by ``--workers`` (8) asynchronous workers. Each evaluation takes a random time (seeded), so
   workers finish out of order; on each completion the result is told and ``ask(1, pending=...)``
   refills the slot with the other in-flight points pending. Simple regret (optimum minus the
   best value seen) after 24/48/60 evaluations, mean ± sd over ``--seeds``.
2. Cost: CPU seconds of one ``ask(q, pending=8 points)`` after 50/200/500 observations of
   Hartmann-6, for q = 8 and q = 128, each in a fresh process with a time limit.

Every run writes one JSON file under ``--out``; finished ones are skipped on a re-run, so a long
benchmark can be resumed or spread over several invocations, and ``--table`` prints the markdown
table from whatever is there. Run with one thread: ``OMP_NUM_THREADS=1``.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_optimizers.py --out bench_out
    python tests/benchmarks/bench_optimizers.py --out bench_out --table
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bayes.optimizer import make_optimizer  # noqa: E402
from bayes.space import Space  # noqa: E402

ALL_BACKENDS = ["botorch", "dragonfly", "sobol", "random"]
CHECKPOINTS = (24, 48, 60)


# ---------------------------------------------------------------------------- test problems
_H6_A = np.array([
    [10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14],
])
_H6_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381],
])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def neg_hartmann6(point: dict[str, float]) -> float:
    x = np.array([point[f"x{i}"] for i in range(6)])
    return float(np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def neg_branin(point: dict[str, float]) -> float:
    x1, x2 = point["x1"], point["x2"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    value = (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10
    return -value


@dataclass(frozen=True)
class Problem:
    space: Space
    objective: Callable[[dict[str, float]], float]
    optimum: float  # maximum of the objective


PROBLEMS: dict[str, Problem] = {
    "hartmann6": Problem(Space({f"x{i}": (0.0, 1.0) for i in range(6)}), neg_hartmann6, 3.32237),
    "branin": Problem(Space({"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}), neg_branin, -0.397887),
}


# ---------------------------------------------------------------------------- regret runs
def run_async(problem: Problem, backend: str, seed: int, evaluations: int, workers: int) -> dict:
    """One asynchronous campaign; returns the best-so-far trace and the ask CPU times."""
    rng = np.random.default_rng([seed, 7])
    optimizer = make_optimizer(problem.space, backend=backend, seed=seed)
    clock = 0.0
    in_flight: list[tuple[float, int, dict]] = []  # (finish time, ticket, point)
    ticket = 0
    ask_cpu_s: list[float] = []

    def submit(points: list[dict]) -> None:
        nonlocal ticket
        for point in points:
            heapq.heappush(in_flight, (clock + rng.uniform(0.5, 1.5), ticket, point))
            ticket += 1

    start = time.process_time()
    submit(optimizer.ask(min(workers, evaluations), pending=[]))
    ask_cpu_s.append(time.process_time() - start)
    asked = min(workers, evaluations)
    values: list[float] = []
    while in_flight:
        clock, _, point = heapq.heappop(in_flight)
        value = problem.objective(point)
        values.append(value)
        optimizer.tell([point], [value])
        if asked < evaluations:
            start = time.process_time()
            submit(optimizer.ask(1, pending=[p for _, _, p in in_flight]))
            ask_cpu_s.append(time.process_time() - start)
            asked += 1
    best = np.maximum.accumulate(values)
    return {
        "regret": [float(problem.optimum - b) for b in best],
        "ask_cpu_s": ask_cpu_s,
    }


# ---------------------------------------------------------------------------- cost per ask
def _timed_ask(backend: str, n_obs: int, q: int, queue: mp.Queue) -> None:
    try:
        problem = PROBLEMS["hartmann6"]
        rng = np.random.default_rng([n_obs, 11])
        points = problem.space.from_unit_many(rng.random((n_obs + 8, 6)))
        optimizer = make_optimizer(problem.space, backend=backend, seed=0)
        optimizer.tell(points[:n_obs], [problem.objective(p) for p in points[:n_obs]])
        start = time.process_time()
        proposed = optimizer.ask(q, pending=points[n_obs:])
        queue.put({"cpu_s": time.process_time() - start, "n": len(proposed)})
    except Exception:  # noqa: BLE001 - reported in the table
        queue.put({"error": traceback.format_exc(limit=3)})


def time_ask(backend: str, n_obs: int, q: int, limit_s: float) -> dict:
    """CPU seconds of one ask in a fresh process (so imports are excluded and a slow back-end
    can be stopped at ``limit_s``)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_timed_ask, args=(backend, n_obs, q, queue))
    process.start()
    try:
        result = queue.get(timeout=limit_s + 120.0)  # + start-up and fitting the history
    except Exception:  # noqa: BLE001 - queue.Empty: over the limit
        result = {"timeout_s": limit_s}
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
    return result


# ---------------------------------------------------------------------------- table
def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(out: Path, problems: list[str], backends: list[str]) -> str:
    lines = ["### Simple regret (mean ± sd over seeds; lower is better)", ""]
    header = "| problem | backend | seeds | " + " | ".join(f"@{k}" for k in CHECKPOINTS)
    lines += [header + " | CPU s per ask (mean) |", "|" + "---|" * (4 + len(CHECKPOINTS))]
    for problem in problems:
        for backend in backends:
            runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"run_{problem}_{backend}_*.json"))]
            if not runs:
                continue
            cells = []
            for k in CHECKPOINTS:
                cells.append(_mean_sd([r["regret"][k - 1] for r in runs if len(r["regret"]) >= k]))
            cpu = statistics.mean(statistics.mean(r["ask_cpu_s"]) for r in runs)
            lines.append(f"| {problem} | {backend} | {len(runs)} | " + " | ".join(cells) + f" | {cpu:.2f} |")
    lines += ["", "### CPU seconds for one ask(q, pending = 8 points) on Hartmann-6", ""]
    timings = sorted(out.glob("time_*.json"))
    if timings:
        keys = sorted({(d["n_obs"], d["q"]) for d in (json.loads(p.read_text()) for p in timings)})
        lines.append("| backend | " + " | ".join(f"q={q}, {n} obs" for n, q in keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for backend in backends:
            cells = []
            for n, q in keys:
                path = out / f"time_{backend}_{n}_{q}.json"
                if not path.exists():
                    cells.append("–")
                    continue
                d = json.loads(path.read_text())
                if "cpu_s" in d:
                    cells.append(f"{d['cpu_s']:.2f}")
                elif "timeout_s" in d:
                    cells.append(f"stopped after {d['timeout_s']:.0f} s wall")
                else:
                    cells.append("error")
            lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += list(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def _names(text: str, accepted: list[str], what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in accepted]
    if unknown:
        sys.exit(f"unknown {what} {unknown}; accepted: {accepted}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="hartmann6,branin")
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS))
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2")
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timing-obs", default="50,200,500")
    parser.add_argument("--timing-q", default="8,128")
    parser.add_argument("--timing-limit-s", type=float, default=600.0)
    parser.add_argument("--skip-regret", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    parser.add_argument("--out", type=Path, default=Path("bench_optimizers_out"))
    args = parser.parse_args(argv)
    problems = _names(args.problems, list(PROBLEMS), "problem")
    backends = _names(args.backends, ALL_BACKENDS, "backend")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        if not args.skip_regret:
            for problem in problems:
                for seed in _ints(args.seeds):
                    for backend in backends:
                        path = args.out / f"run_{problem}_{backend}_{seed}.json"
                        if path.exists():
                            continue
                        start = time.time()
                        result = run_async(
                            PROBLEMS[problem], backend, seed, args.evaluations, args.workers
                        )
                        result.update(problem=problem, backend=backend, seed=seed,
                                      wall_s=time.time() - start)
                        path.write_text(json.dumps(result))
                        print(f"{problem} {backend} seed {seed}: regret@end "
                              f"{result['regret'][-1]:.3f} ({result['wall_s']:.0f} s)", flush=True)
        if not args.skip_timing:
            for n_obs in _ints(args.timing_obs):
                for q in _ints(args.timing_q):
                    for backend in backends:
                        path = args.out / f"time_{backend}_{n_obs}_{q}.json"
                        if path.exists():
                            continue
                        result = time_ask(backend, n_obs, q, args.timing_limit_s)
                        result.update(backend=backend, n_obs=n_obs, q=q)
                        path.write_text(json.dumps(result))
                        print(f"ask {backend} obs={n_obs} q={q}: {result}", flush=True)
    print(table(args.out, problems, backends))


if __name__ == "__main__":
    main()
