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

Optimiser: the project's default ``botorch`` back-end as the async controller builds it (one
optimiser for the whole run, kept hyper-parameters refit every 10 % more observations, the local
trust-region GP on ``max_train`` = 1000 observations beyond that, ``background_refit =
"when_ready"``). It is primed before t = 0 with one ask on the starting data (not timed), so its
hyper-parameters are kept as in a running campaign. A refit the asks start runs on a core of its
own: its measured CPU seconds start when the ask that started it returns, and the first ask that
begins after they end uses its hyper-parameters (bayes.surrogate.DeferredExecutor holds it).

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
from bayes.surrogate import DeferredExecutor
from hpc.campaign.proposer import DuplicateGuard, ReleaseRate, ask_size

EVAL_S = 120.0
POLL_S = 1.0
DIM = 4


def hartmann4(unit: np.ndarray) -> np.ndarray:
    import torch
    from botorch.test_functions import Hartmann

    with torch.no_grad():
        return Hartmann(dim=DIM, negate=True)(torch.as_tensor(unit)).numpy()


def simulate(workers: int, n_start: int, window_s: float, look_ahead: bool,
             seed: int, warmup_s: float = EVAL_S, log_asks: bool = False) -> dict:
    space = Space({f"x{i}": (0.0, 1.0) for i in range(DIM)})
    rng = np.random.default_rng(seed)
    asker = make_optimizer(space, "botorch", seed=seed, n_initial=1,
                           background_refit="when_ready")
    asker.refit_executor = refits = DeferredExecutor()
    guard = DuplicateGuard(space, 1e-3 * np.sqrt(DIM))
    start_unit = rng.random((n_start, DIM))
    start = space.from_unit_many(start_unit)
    asker.tell(start, list(hartmann4(start_unit)))
    for point in start:
        guard.add(point)
    asker.ask(1, [])  # primed: hyper-parameters kept as in a running campaign
    while refits.queued:
        refits.run_next()
    running_refits: list[tuple[float, object, object]] = []  # (done at, future, result)
    refit_cpu: list[float] = []
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
    methods: list[str] = []
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
        for done in [r for r in running_refits if r[0] <= t]:
            running_refits.remove(done)
            done[1].set_result(done[2])
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
                costs.append((n, len(pending), asker.n_observations, last_ask_s))
                methods.append(asker.last_ask_method)
                if log_asks:
                    print(f"  ask at t = {t:.0f} s: n {n}, pending {len(pending)}, "
                          f"{asker.n_observations} observations, {last_ask_s:.2f} CPU-s, "
                          f"{asker.last_ask_method}", flush=True)
                ask_until = t + last_ask_s
                while refits.queued:  # started by this ask: on their own core from its end
                    fn, future = refits.queued.pop(0)
                    future.set_running_or_notify_cancel()
                    result, refit_s = _cpu(fn)
                    refit_cpu.append(refit_s)
                    running_refits.append((ask_until + refit_s, future, result))
    return {"utilisation": busy_s / (workers * window_s), "asks": costs, "methods": methods,
            "observations": asker.n_observations, "refit_cpu_s": refit_cpu}


def _cpu(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--observations", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--window", type=float, default=360.0, help="virtual seconds measured")
    parser.add_argument("--warmup", type=float, default=EVAL_S, help="virtual seconds before")
    parser.add_argument("--anchor", choices=["yes", "no", "only"], default="yes",
                        help="also (or only) run the loop without look-ahead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-asks", action="store_true", help="print every ask")
    args = parser.parse_args()
    print(f"optimiser: botorch defaults, background_refit = when_ready; "
          f"window {args.window:.0f} virtual s after {args.warmup:.0f} s warm-up"
          + ("; WITHOUT look-ahead (the anchor)" if args.anchor == "only" else ""))
    print(f"{'workers':>7} {'obs':>6} {'->':>6} {'util':>6} {'anchor':>7} {'asks':>5} "
          f"{'mean n':>7} {'pending':>8} {'CPU-s/ask':>10} {'max':>6} {'refits CPU-s':>13}")
    for workers in args.workers:
        for n_start in args.observations:
            anchor = (None if args.anchor == "no" else simulate(
                workers, n_start, args.window, False, args.seed, args.warmup, args.log_asks))
            run = anchor if args.anchor == "only" else simulate(
                workers, n_start, args.window, True, args.seed, args.warmup, args.log_asks)
            n_asks = len(run["asks"])
            asks = run["asks"] or [(0, 0, 0, 0.0)]  # no ask in the window: zeros
            cpu = [c for *_, c in asks]
            print(f"{workers:>7} {n_start:>6} {run['observations']:>6} "
                  f"{run['utilisation']:>6.1%} "
                  f"{'-' if anchor is None else format(anchor['utilisation'], '.1%'):>7} "
                  f"{n_asks:>5} {statistics.mean(a[0] for a in asks):>7.1f} "
                  f"{statistics.mean(a[1] for a in asks):>8.0f} "
                  f"{statistics.mean(cpu):>10.2f} {max(cpu):>6.2f} "
                  f"{' '.join(f'{r:.1f}' for r in run['refit_cpu_s']) or '-':>13}  "
                  + ", ".join(f"{m} {run['methods'].count(m)}"
                              for m in sorted(set(run["methods"]))), flush=True)


if __name__ == "__main__":
    main()
