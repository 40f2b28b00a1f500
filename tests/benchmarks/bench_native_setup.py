"""Benchmark: the native solver's fixed costs, old (torch) vs new (fused) set-up, in one run.

Why: at 128³ a fast-method solve takes 5–7 CG steps, so what it costs besides the cycle (the
finest level's faces, diagonal and initial guess; the hierarchy; the cluster labelling) is a
fifth of it. This script times those stages and whole solves with ``native.FUSED_SETUP`` off
("old", the torch operations) and on ("new"), alternating in one process after
``native.warm_up()``, and checks that both give the same value and iteration count (the
set-up is bit-identical, so the same solve). CPU seconds (``time.process_time``), medians;
the copy of a 128 MiB float32 array is the bandwidth anchor, measured in the same run.

    python tests/benchmarks/bench_native_setup.py --size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from bench_solvers import _copy_bandwidth_GB_s  # the same bandwidth anchor as the solver bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from kernels.metrics.solvers import native, solve, spanning_cluster
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    native.warm_up()
    # flattened particles (the default until 2026-12-03), as every documented ratio: the
    # solver's speed stays comparable across runs, and small --size runs always pack
    labels = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), args.size, 1.0,
                                seed=args.seed, calendering="flatten")
    fields = {"pore": (labels == 0).astype(np.float32),
              "electronic 1/0.1 S/m": np.array([0, 1.0, 0.1], np.float32)[labels],
              "default 1e-2/117 S/m": np.array([0, 1e-2, 117], np.float32)[labels]}
    print(f"load average {os.getloadavg()}, copy {_copy_bandwidth_GB_s(repeats=5):.1f} GB/s")
    print("| solve | stage | old CPU-s | new CPU-s | old / new |")
    print("|---|---|---|---|---|")
    for name, field in fields.items():
        sigma32 = torch.from_numpy(field) / float(field.max())
        times: dict[tuple[str, bool], list[float]] = {}
        results: dict[bool, set] = {False: set(), True: set()}
        for _ in range(args.repeats):
            for new in (False, True):
                native.FUSED_SETUP = new
                start = time.process_time()
                native._fine_level(sigma32)
                times.setdefault(("fine level (float32)", new), []).append(
                    time.process_time() - start)
                start = time.process_time()
                native._hierarchy_from(native._fine_level(sigma32)[0])
                times.setdefault(("fine + coarse levels, coarsest inverse", new), []).append(
                    time.process_time() - start)
                start = time.process_time()
                spanning_cluster(field > 0)
                times.setdefault(("spanning-cluster labelling", new), []).append(
                    time.process_time() - start)
                start = time.process_time()
                result = solve(field, backend="native")
                times.setdefault(("whole solve", new), []).append(time.process_time() - start)
                results[new].add((result.relative_conductance, result.iterations))
        native.FUSED_SETUP = True
        if results[False] != results[True] or len(results[True]) != 1:
            raise SystemExit(f"{name}: old and new differ: {results}")
        for stage in ("fine level (float32)", "fine + coarse levels, coarsest inverse",
                      "spanning-cluster labelling", "whole solve"):
            old = statistics.median(times[(stage, False)])
            new = statistics.median(times[(stage, True)])
            print(f"| {name} | {stage} | {old:.4f} | {new:.4f} | {old / new:.2f}× |")
        print(f"| {name} | value, iterations | {results[True]} | | |")
    print(f"load average {os.getloadavg()}, copy {_copy_bandwidth_GB_s(repeats=5):.1f} GB/s")


if __name__ == "__main__":
    main()
