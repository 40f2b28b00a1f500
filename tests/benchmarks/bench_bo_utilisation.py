"""How busy the controller keeps W simulated workers of 2-minute evaluations, with a real optimiser.

The workers are an event queue on a virtual clock (each evaluation takes 120 s +- 10 %, of the
4-D Hartmann function, which nobody here tuned on); the optimiser is real (the `bayes` BoTorch
back-end) and each ask's measured CPU seconds are the virtual time it occupies. The controller
is simulated with its own policy pieces (hpc.campaign.proposer: `ask_size`, `ReleaseRate`,
`DuplicateGuard`): one ask at a time computed with the pending points of its start, results
that arrive meanwhile told when it returns, ready points buffered and submitted at the next
poll cycle (1 s). Utilisation = busy worker-seconds / (W x window), over the window after one
evaluation time of warm-up. The anchor in the same run is the same loop without look-ahead
(each ask only for the slots free at its start: what an ask on the critical path can do).

Surrogate: `--subset K` fits each ask on a subset of K observations (the K/2 best and the K/2
most recent; every observation still counts for the duplicate guard), because an exact GP on
5000 observations costs 35-45 CPU-minutes per fit (issue 18). Plain BoTorch otherwise.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_utilisation.py --workers 64 256 \\
        --observations 100 1000 5000 --window 360
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import time

import numpy as np

from bayes.optimizer import make_optimizer
from bayes.space import Space
from hpc.campaign.proposer import DuplicateGuard, ReleaseRate, ask_size

EVAL_S = 120.0
POLL_S = 1.0
DIM = 4


def hartmann4(unit: np.ndarray) -> np.ndarray:
    import torch
    from botorch.test_functions import Hartmann

    with torch.no_grad():
        return Hartmann(dim=DIM, negate=True)(torch.as_tensor(unit)).numpy()


class SubsetAsker:
    """Asks a fresh BoTorch optimiser told a subset of the observations (see module doc)."""

    def __init__(self, space: Space, subset: int | None, seed: int) -> None:
        self.space, self.subset, self.seed = space, subset, seed
        self.points: list[dict] = []
        self.values: list[float] = []
        self.n_asks = 0

    def tell(self, points: list[dict], values: list[float]) -> None:
        self.points += points
        self.values += values

    def ask(self, n: int, pending: list[dict]) -> list[dict]:
        index = np.arange(len(self.values))
        if self.subset is not None and len(index) > self.subset:
            half = self.subset // 2
            best = np.argsort(self.values)[-half:]
            recent = np.setdiff1d(index, best)[-(self.subset - half):]
            index = np.union1d(best, recent)
        optimizer = make_optimizer(self.space, "botorch", seed=self.seed + self.n_asks,
                                   n_initial=1)
        optimizer.tell([self.points[i] for i in index], [self.values[i] for i in index])
        self.n_asks += 1
        return optimizer.ask(n, pending)


def simulate(workers: int, n_start: int, window_s: float, subset: int | None, look_ahead: bool,
             seed: int, warmup_s: float = EVAL_S) -> dict:
    space = Space({f"x{i}": (0.0, 1.0) for i in range(DIM)})
    rng = np.random.default_rng(seed)
    asker = SubsetAsker(space, subset, seed)
    guard = DuplicateGuard(space, 1e-3 * np.sqrt(DIM))
    start_unit = rng.random((n_start, DIM))
    start = space.from_unit_many(start_unit)
    asker.tell(start, list(hartmann4(start_unit)))
    for point in start:
        guard.add(point)
    # steady state at t = 0: every worker busy, finishing uniformly over one evaluation time
    running: list[tuple[float, int, dict]] = []
    first_unit = rng.random((workers, DIM))
    for i, point in enumerate(space.from_unit_many(first_unit)):
        guard.add(point)
        heapq.heappush(running, (float(rng.uniform(0, EVAL_S)), i, point))
    counter = workers
    releases = ReleaseRate()
    buffer: list[dict] = []
    untold: list[tuple[dict, float]] = []
    ask_until, ready, last_ask_s = None, None, 0.0
    costs: list[tuple[int, int, int, float]] = []  # (n, pending, observations, CPU s)
    busy_s, t, t_end, t_from = 0.0, 0.0, warmup_s + window_s, warmup_s
    while t < t_end:
        t_next = t + POLL_S
        # worker-seconds busy in [t, t_next): running jobs until they finish
        for finish, _, _ in running:
            lo, hi = max(t, t_from), min(t_next, finish)
            busy_s += max(0.0, hi - lo)
        t = t_next
        while running and running[0][0] <= t:
            finish, _, point = heapq.heappop(running)
            releases.add(finish)
            untold.append((point, float(hartmann4(space.to_unit(point)[None])[0])))
        if ask_until is not None and ask_until <= t:
            kept, _ = guard.keep_new(ready)
            buffer += kept
            ask_until, ready = None, None
        if ask_until is None and untold:
            asker.tell([p for p, _ in untold], [v for _, v in untold])
            untold = []
        free = workers - len(running)
        while free > 0 and buffer:
            counter += 1
            duration = EVAL_S * rng.uniform(0.9, 1.1)
            heapq.heappush(running, (t + duration, counter, buffer.pop(0)))
            free -= 1
        if ask_until is None:
            rate = releases.per_s(t) if look_ahead else 0.0
            n = ask_size(free, len(buffer), 10**9, rate, last_ask_s, workers)
            if n > 0:
                pending = [p for _, _, p in running] + buffer
                cpu = time.process_time()
                ready = asker.ask(n, pending)
                last_ask_s = time.process_time() - cpu
                costs.append((n, len(pending), len(asker.values), last_ask_s))
                ask_until = t + last_ask_s
    return {"utilisation": busy_s / (workers * window_s), "asks": costs,
            "observations": len(asker.values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--observations", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--window", type=float, default=360.0, help="virtual seconds measured")
    parser.add_argument("--warmup", type=float, default=EVAL_S, help="virtual seconds before")
    parser.add_argument("--subset", type=int, default=256)
    parser.add_argument("--anchor", choices=["yes", "no", "only"], default="yes",
                        help="also (or only) run the loop without look-ahead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    subset = args.subset if args.subset > 0 else None
    print(f"surrogate: plain BoTorch (GP + qLogNEI, Thompson sampling from 64), fitted on "
          f"{'all observations' if subset is None else f'a subset of {subset}'}; "
          f"window {args.window:.0f} virtual s after {args.warmup:.0f} s warm-up"
          + ("; WITHOUT look-ahead (the anchor)" if args.anchor == "only" else ""))
    print(f"{'workers':>7} {'obs':>6} {'->':>6} {'util':>6} {'anchor':>7} {'asks':>5} "
          f"{'mean n':>7} {'pending':>8} {'CPU-s/ask':>10} {'max':>6}")
    for workers in args.workers:
        for n_start in args.observations:
            anchor = (None if args.anchor == "no" else simulate(
                workers, n_start, args.window, subset, False, args.seed, args.warmup))
            run = anchor if args.anchor == "only" else simulate(
                workers, n_start, args.window, subset, True, args.seed, args.warmup)
            asks = run["asks"]
            cpu = [c for *_, c in asks]
            print(f"{workers:>7} {n_start:>6} {run['observations']:>6} "
                  f"{run['utilisation']:>6.1%} "
                  f"{'-' if anchor is None else format(anchor['utilisation'], '.1%'):>7} "
                  f"{len(asks):>5} {statistics.mean(a[0] for a in asks):>7.1f} "
                  f"{statistics.mean(a[1] for a in asks):>8.0f} "
                  f"{statistics.mean(cpu):>10.2f} {max(cpu):>6.2f}", flush=True)


if __name__ == "__main__":
    main()
