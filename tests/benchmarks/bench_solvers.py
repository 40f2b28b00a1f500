"""Benchmark: native multigrid-CG back-end vs TauFactor on the same volumes, in one run.

For each size and each solve (pore tortuosity: binary pore field; electronic: AM + CBD with
per-phase conductivities) the two back-ends run alternately (taufactor, native, taufactor,
native, ...) so that both see the same load on a shared machine; medians and their ratio are
reported. Every solve runs in its own subprocess with one torch thread, which also gives its
peak memory: peak RSS during the solve minus RSS just before it (same imports in both: torch,
both back-ends, and ``native.warm_up()``: numba and the native solver's compiled kernels, a
one-off cost per process, reported on its own as ``numba_load_cpu_s``). Times are CPU seconds of the solve
(``time.process_time``: on a shared machine wall time measures the other jobs); wall seconds
are kept alongside.

The bandwidth anchor: each worker also times a single-thread copy of a float32 array four
times the size of the L3 cache in the same process, the bound every sweep of either solver is
measured against (GB/s moved, read plus write).

Accuracy: each back-end at the benchmark tolerance is compared with a reference value, the
native solver run to rel_tol 1e-7 (its result is an upper bound converging quadratically), and
at sizes up to --tight-max with TauFactor run to conv_crit 1e-4 as an independent check.

    python tests/benchmarks/bench_solvers.py --sizes 64 128 --repeats 2 --markdown out.md

``--steady N``: instead, what a worker that solves many cubes sees. One process per size and
solve runs TauFactor and native alternately N times on the same field (after
``native.warm_up()``), and reports each back-end's first solve and the median of the others:
the first pays the process's fresh memory (page faults) and first calls, the others are the
steady state of a campaign's persistent worker (39 cubes per design).

    python tests/benchmarks/bench_solvers.py --steady 4 --sizes 128

High contrast (`--electronic-S-m 0.001 1000`): TauFactor does not converge there, so `solve()`
retries it with native and the "taufactor" row then times TauFactor's failed attempt plus the
native retry; the printed method says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("pore", "electronic")
# σ_AM, σ_CBD of the electronic solve: 1 and 0.1 as in the first TauFactor timings; the
# loop's defaults (kernels.metrics.volume: 0.18 and 10 S/m) via --electronic-S-m 0.18 10.
DEFAULT_ELECTRONIC_S_M = (1.0, 0.1)


#: the structures every documented ratio was measured on (flattened particles, the simulator's
#: default until 2026-12-03): the solver's speed against TauFactor stays comparable across runs
CALENDERING = "flatten"

def _field(labels, case: str, electronic_S_m: tuple[float, float]):
    import numpy as np

    if case == "pore":
        return (labels == 0).astype(np.float32)
    table = np.array([0.0, *electronic_S_m], dtype=np.float32)
    return table[labels]


def _worker(path: str, case: str, backend: str, rel_tol: float,
            electronic_S_m: tuple[float, float]) -> None:
    """Run one solve; print a JSON line with the result, wall time and peak memory."""
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import kernels.metrics.solvers.native  # noqa: F401  (both workers import both back-ends)
    import kernels.metrics.solvers.taufactor_backend  # noqa: F401
    from kernels.metrics.solvers import solve

    # numba, and the fused kernels' compiled code for both methods: once per process
    numba_s = kernels.metrics.solvers.native.warm_up()
    field = _field(np.load(path), case, electronic_S_m)

    def rss_kib() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    before = rss_kib()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = solve(field, axis=0, backend=backend, rel_tol=rel_tol, device="cpu")
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    copy_GB_s = _copy_bandwidth_GB_s()  # after the peak memory is read: it allocates 256 MiB
    print(json.dumps({
        "relative_conductance": result.relative_conductance, "iterations": result.iterations,
        "converged": result.converged, "method": result.method, "cpu_s": cpu,
        "wall_s": wall, "peak_extra_MiB": max(peak - before, 0) / 1024.0,
        "numba_load_cpu_s": numba_s, "copy_GB_s": copy_GB_s,
    }))


def _volumes(args: argparse.Namespace, folder: str):
    """(size, spec, path of the saved labels) for every --sizes × --params volume."""
    import numpy as np

    from kernels.structure.procedural import ManufacturingParams, generate_structure

    for size, spec in [(n, p) for n in args.sizes for p in args.params]:
        am_wt_frac, porosity, adhesion = (float(v) for v in spec.split(","))
        labels = generate_structure(ManufacturingParams(am_wt_frac, porosity, adhesion), size,
                                    1.0, seed=args.seed, calendering=args.calendering)
        path = str(Path(folder) / f"vol{size}_{spec}.npy")
        np.save(path, labels)
        yield size, spec, path


def _steady_worker(path: str, case: str, rel_tol: float, repeats: int,
                   electronic_S_m: tuple[float, float]) -> None:
    """TauFactor and native alternately ``repeats`` times in this process; a JSON line with
    both back-ends' CPU seconds per solve and their values."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import kernels.metrics.solvers.native
    import kernels.metrics.solvers.taufactor_backend  # noqa: F401
    from kernels.metrics.solvers import solve

    kernels.metrics.solvers.native.warm_up()
    field = _field(np.load(path), case, electronic_S_m)
    out: dict[str, dict[str, list]] = {b: {"cpu_s": [], "value": [], "iterations": []}
                                       for b in ("taufactor", "native")}
    for _ in range(repeats):
        for backend in ("taufactor", "native"):
            start = time.process_time()
            result = solve(field, axis=0, backend=backend, rel_tol=rel_tol, device="cpu")
            out[backend]["cpu_s"].append(time.process_time() - start)
            out[backend]["value"].append(result.relative_conductance)
            out[backend]["iterations"].append(result.iterations)
    print(json.dumps({**out, "copy_GB_s": _copy_bandwidth_GB_s()}))


def _steady(args: argparse.Namespace, cond: tuple[float, float]) -> None:
    """The --steady table: first and steady-state solves of both back-ends in one process."""
    lines = ["| size | solve | TauFactor first | TauFactor steady | native first | "
             "native steady | native its | steady speed-up | first speed-up | copy GB/s | "
             "native / TauFactor value − 1 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYBAMM_DISABLE_TELEMETRY="true")
    with tempfile.TemporaryDirectory() as tmp:
        for size, _spec, path in _volumes(args, tmp):
            for case in CASES:
                cmd = [sys.executable, __file__, "--steady-worker", path, case,
                       repr(args.rel_tol), str(args.steady), "--electronic-S-m",
                       *(repr(v) for v in cond)]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=args.timeout_s, check=True)
                res = json.loads(done.stdout.strip().splitlines()[-1])
                tf, nat = res["taufactor"]["cpu_s"], res["native"]["cpu_s"]
                tf_steady, nat_steady = statistics.median(tf[1:]), statistics.median(nat[1:])
                value = res["native"]["value"][-1] / res["taufactor"]["value"][-1] - 1
                lines.append(f"| {size}³ | {case} | {tf[0]:.2f} | {tf_steady:.2f} | "
                             f"{nat[0]:.3f} | {nat_steady:.3f} | "
                             f"{res['native']['iterations'][-1]} | "
                             f"**{tf_steady / nat_steady:.1f}×** | {tf[0] / nat[0]:.1f}× | "
                             f"{res['copy_GB_s']:.1f} | {value:+.1e} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


def _copy_bandwidth_GB_s(megabytes: int = 128, repeats: int = 10) -> float:
    """Best of ``repeats`` single-thread copies of a float32 array (bytes read + written per
    CPU second): the memory-bandwidth bound of this process at this moment."""
    import numpy as np

    a = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        np.copyto(b, a)
        best = min(best, time.process_time() - start)
    return 2 * a.nbytes / max(best, 1e-9) / 1e9


def _run(path: str, case: str, backend: str, rel_tol: float, timeout_s: float,
         electronic_S_m: tuple[float, float]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYBAMM_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, __file__, "--worker", path, case, backend, repr(rel_tol),
           "--electronic-S-m", *(repr(v) for v in electronic_S_m)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per back-end")
    parser.add_argument("--rel-tol", type=float, default=1e-3)
    parser.add_argument("--tight-max", type=int, default=128,
                        help="largest size also solved by TauFactor at conv_crit 1e-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calendering", choices=("flatten", "rearrange"), default=CALENDERING,
                        help="the structures' calendering (default: the flattened particles "
                             "the documented ratios were measured on; 'rearrange' is the "
                             "simulator's default since 2026-12-03)")
    parser.add_argument("--electronic-S-m", type=float, nargs=2, metavar=("AM", "CBD"),
                        default=DEFAULT_ELECTRONIC_S_M, help="phase conductivities, electronic")
    parser.add_argument("--params", nargs="+", default=["0.9,0.35,0.5"],
                        help="volumes as am_wt_frac,porosity,binder_adhesion (one or more)")
    parser.add_argument("--timeout-s", type=float, default=7200.0)
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--steady", type=int, default=0, metavar="N",
                        help="first and steady-state solves of both back-ends in one process "
                             "(N solves each, alternating; N >= 2)")
    parser.add_argument("--worker", nargs=4, metavar=("NPY", "CASE", "BACKEND", "REL_TOL"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--steady-worker", nargs=4, metavar=("NPY", "CASE", "REL_TOL", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, case, backend, rel_tol = args.worker
        _worker(path, case, backend, float(rel_tol), tuple(args.electronic_S_m))
        return
    if args.steady_worker:
        path, case, rel_tol, repeats = args.steady_worker
        _steady_worker(path, case, float(rel_tol), int(repeats), tuple(args.electronic_S_m))
        return
    if args.steady:
        if args.steady < 2:
            parser.error(f"--steady: at least 2 solves per back-end, got {args.steady}")
        _steady(args, tuple(args.electronic_S_m))
        return

    cond = tuple(args.electronic_S_m)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, spec, path in _volumes(args, tmp):
            for case in CASES:
                runs: dict[str, list[dict]] = {"taufactor": [], "native": []}
                for _ in range(args.repeats):
                    for backend in ("taufactor", "native"):
                        res = _run(path, case, backend, args.rel_tol, args.timeout_s, cond)
                        runs[backend].append(res)
                        print(f"{size}^3 {case:10s} {backend:9s} {res['cpu_s']:8.3f} CPU-s "
                              f"(wall {res['wall_s']:.2f}, copy {res['copy_GB_s']:.1f} GB/s) "
                              f"it {res['iterations']:5d} value {res['relative_conductance']:.6f} "
                              f"mem +{res['peak_extra_MiB']:.0f} MiB [{res['method']}]", flush=True)
                ref = _run(path, case, "native", 1e-7, args.timeout_s, cond)["relative_conductance"]
                tight = None
                if size <= args.tight_max:
                    tight = _run(path, case, "taufactor", 1e-4, args.timeout_s, cond)
                    tight = tight["relative_conductance"]
                row = {"size": size, "params": spec, "case": case, "reference": ref,
                       "taufactor_tight": tight}
                for backend, results in runs.items():
                    row[backend] = {
                        "cpu_s": statistics.median(r["cpu_s"] for r in results),
                        "wall_s": statistics.median(r["wall_s"] for r in results),
                        "copy_GB_s": statistics.median(r["copy_GB_s"] for r in results),
                        "numba_load_cpu_s": statistics.median(r["numba_load_cpu_s"]
                                                              for r in results),
                        "iterations": statistics.median(r["iterations"] for r in results),
                        "peak_extra_MiB": statistics.median(r["peak_extra_MiB"] for r in results),
                        "value": results[-1]["relative_conductance"],
                    }
                rows.append(row)
                print(_row_markdown(row), flush=True)
    table = _table(rows, args)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


def _err(value: float, ref: float | None) -> str:
    return "—" if not ref else f"{100 * (value / ref - 1):+.3f} %"


def _row_markdown(row: dict) -> str:
    tf, nat = row["taufactor"], row["native"]
    speedup = tf["cpu_s"] / nat["cpu_s"]
    mem = nat["peak_extra_MiB"] / max(tf["peak_extra_MiB"], 1e-9)
    return (f"| {row['size']}³ | {row['params']} | {row['case']} | {tf['cpu_s']:.2f} | {tf['iterations']:.0f} | "
            f"{nat['cpu_s']:.3f} | {nat['iterations']:.0f} | **{speedup:.1f}×** | "
            f"{nat['copy_GB_s']:.1f} | "
            f"{tf['peak_extra_MiB']:.0f} | {nat['peak_extra_MiB']:.0f} | {mem:.2f} | "
            f"{row['reference']:.5f} | {_err(tf['value'], row['reference'])} | "
            f"{_err(nat['value'], row['reference'])} | "
            f"{_err(row['taufactor_tight'] or 0, row['reference']) if row['taufactor_tight'] else '—'} |")


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"Solver benchmark, {time.strftime('%Y-%m-%d')}, CPU, 1 torch thread, rel_tol "
            f"{args.rel_tol:g}, σ_AM, σ_CBD = {args.electronic_S_m[0]:g}, "
            f"{args.electronic_S_m[1]:g}, {args.calendering} particles, medians of {args.repeats} "
            "interleaved runs, CPU seconds; "
            "errors vs native at rel_tol 1e-7; 'TF tight' = TauFactor at conv_crit 1e-4; copy = "
            "single-thread copy bandwidth in the native worker (same run).\n\n"
            "| size | am_wt_frac, porosity, adhesion | solve | TauFactor CPU-s | TF iters | native CPU-s | native iters | speed-up | copy GB/s | "
            "TF MiB | native MiB | mem ratio | reference σ/σmax | TF error | native error | "
            "TF tight error |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(_row_markdown(r) for r in rows) + "\n"


if __name__ == "__main__":
    main()
