"""Benchmark: the robust native solve's stop rules, error against a reference and iterations.

Each case's robust CG is run once far past convergence (rel_tol 1e-11, at most RECORD_STEPS
steps), recording per step what a stop rule can read (the energy decrease α r·p, the electrode
current, CG's α, ρ = r·z and β) and the dissipated power E(x_k) that ``_pcg`` would return
there. Every rule is then replayed on those records, the solver's own through
``native._converged``: where it would stop at rel_tol 1e-2, 1e-3 and 1e-4, after how many
iterations, and E(x_k)'s error there against the reference. Old and new rule see the same
iterates: no load noise, one run.

Rules: "current" ×32 (the rule until 2026-12-03: TAIL_SAFETY × the geometric tail of the last
TAIL_WINDOW decreases below rel_tol × the electrode current), "energy" ×S (the same tail × S
below rel_tol × (E − estimate), the new rule at S = ENERGY_TAIL_SAFETY), and Gauss–Radau
upper bounds (Meurant & Tichý's recurrence) with the smallest Ritz value of CG's Lanczos
tridiagonal / c as the preconditioned operator's smallest eigenvalue (measured, not kept).

References: a sparse LU solve (``tests/test_solver_contrast.direct_sigma_eff``) on the 40³
high-contrast cases of docs/solvers.md "High conductivity contrast"; the record's own last E
(native past rel_tol 1e-10) on 64³ corners and 128³ cubes, and on the slow 128³ 1 µm case.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --record runs.json [--quick]
    python tests/benchmarks/bench_stop_rule.py --evaluate runs.json
    OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --timing 3   # CPU-s, old/new
    OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --timing 3 --compare passes

``--fast-check``: the fast method's stop (its last decrease / TOLERANCE_SAFETY below rel_tol ×
the electrode current) measured, not changed, at contrast <= FAST_MAX_CONTRAST: pore fields and
electronic ones at 1/1, 0.18/10, 1/0.1 and 1/0.0101 S/m, on the 40³ electrodes (against sparse
LU), the 64³ corners and (without ``--quick``) the 128³ bench cubes (against the robust method
at rel_tol 1e-10); the fast solve's error / rel_tol at rel_tol 1e-2, 1e-3, 1e-4.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --fast-check [--quick]

``--compare`` picks what ``--timing``'s old and new differ by: ``stop`` (default) the stop rule
(``native.STOP_RULE`` "current" / "energy"), ``passes`` the robust solve's passes around its
cycle (``native.SPARSE_ISLANDS`` and ``native.FUSED_CG`` False / True: the cluster corrections
by dense stencil passes / from the boundary faces, CG's vector work in torch / numba).

About 6 CPU-minutes for every case (``--quick``: the 40³ and 64³ ones, ≈ 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.linalg import eigvalsh_tridiagonal  # noqa: E402

from kernels.cell.cbd_model import DEFAULT_CONDUCTIVITY_AM_S_M, DEFAULT_CONDUCTIVITY_CBD_S_M  # noqa: E402
from kernels.metrics.solvers import native  # noqa: E402
from kernels.structure.procedural import AM, CBD, ManufacturingParams, generate_structure  # noqa: E402

DEFAULT = (DEFAULT_CONDUCTIVITY_AM_S_M, DEFAULT_CONDUCTIVITY_CBD_S_M)
CONTRASTS_40 = [(0.1, 100.0), (0.01, 100.0), (0.001, 1000.0), (0.01, 116.55)]
PARAMS_40 = [(0.97, 0.30, 0.0), (0.97, 0.30, 0.5), (0.97, 0.30, 1.0), (0.9, 0.30, 0.5)]
CONTRASTS = [DEFAULT, (0.001, 1000.0), (0.1, 100.0), (1.0, 0.001)]
CORNERS_64 = [(0.80, 0.20, 0.0), (0.85, 0.30, 1.0), (0.9, 0.35, 0.5), (0.97, 0.30, 0.0),
              (0.98, 0.55, 1.0)]
REL_TOLS = (1e-2, 1e-3, 1e-4)
DEEP_TOL = 1e-11
RECORD_STEPS = 400
# (kind, factor[, window]): ("current", 32) the old rule, ("energy", S) the new one at S = 8,
# a third entry replacing TAIL_WINDOW; ("radau", c): Gauss-Radau with μ = θ_min / c
RULES = [("current", 32.0), ("current", 8.0), ("energy", 32.0), ("energy", 16.0),
         ("energy", 8.0), ("energy", 4.0), ("energy", 8.0, 4), ("energy", 8.0, 3),
         ("energy", 8.0, 2), ("radau", 1.0), ("radau", 2.0), ("radau", 4.0), ("radau", 8.0)]


#: the structures the documented replays were measured on (flattened particles, the simulator's
#: default until 2026-12-03), so the recorded solves and their ratios stay comparable
CALENDERING = "flatten"

def _cases(quick: bool):
    """(name, field, reference: 'lu' or 'deep')."""
    for params in PARAMS_40:
        labels = generate_structure(ManufacturingParams(*params), 40, 1.0, seed=0,
                                    calendering=CALENDERING)
        for sam, scbd in CONTRASTS_40:
            yield f"40³ 1 µm {params} {sam}/{scbd}", _field(labels, sam, scbd), "lu"
    for params in CORNERS_64:
        labels = generate_structure(ManufacturingParams(*params), 64, 0.4, seed=0,
                                    calendering=CALENDERING)
        for sam, scbd in CONTRASTS:
            yield f"64³ 0.4 µm {params} {sam:g}/{scbd:g}", _field(labels, sam, scbd), "deep"
    if quick:
        return
    bench = ManufacturingParams(0.9, 0.35, 0.5)  # bench_characterise_speed's cube
    for seed in (0, 1, 2, 3):  # seed 0: docs/solvers.md's bench cube; 1-3: --stages' cubes
        labels = generate_structure(bench, 128, 0.4, seed=seed, calendering=CALENDERING)
        for sam, scbd in (CONTRASTS if seed == 1 else CONTRASTS[:1]):
            yield (f"128³ 0.4 µm (0.9, 0.35, 0.5) seed {seed} {sam:g}/{scbd:g}",
                   _field(labels, sam, scbd), "deep")
    labels = generate_structure(ManufacturingParams(0.97, 0.30, 0.5), 128, 1.0, seed=0,
                                calendering=CALENDERING)
    yield "128³ 1 µm (0.97, 0.30, 0.5) 0.001/1000 (slow)", _field(labels, 0.001, 1000.0), "deep"


def _field(labels: np.ndarray, sigma_am: float, sigma_cbd: float) -> np.ndarray:
    field = np.zeros(labels.shape, dtype=np.float32)
    field[labels == AM] = sigma_am
    field[labels == CBD] = sigma_cbd
    return field


class _Recorder(native._History):
    """native._History that also records, at each step, _pcg's α, ρ, β (the β that formed
    this step's direction), the electrode current and E(x_k) (one more pass, for the record)."""

    steps: list[dict] = []

    def step(self, decrease: float) -> None:
        super().step(decrease)
        pcg = sys._getframe(1).f_locals
        self.steps.append({"decrease": decrease, "alpha": pcg["alpha"], "rho": pcg["rho"],
                           "beta": pcg.get("beta", math.nan), "current": pcg["current"],
                           "energy": native._energy(pcg["fine"], pcg["x"]),
                           "tracked": self.energy})


@contextmanager
def _recording():
    saved_history, saved_robust = native._History, native.ROBUST
    _Recorder.steps = []
    native._History = _Recorder
    native.ROBUST = dataclasses.replace(native.ROBUST, max_iterations=RECORD_STEPS)
    try:
        yield _Recorder.steps
    finally:
        native._History, native.ROBUST = saved_history, saved_robust


def record(path: Path, quick: bool, cases: int = 0) -> None:
    from tests.test_solver_contrast import direct_sigma_eff

    torch.set_num_threads(1)
    runs = []
    for number, (name, field, reference) in enumerate(_cases(quick)):
        if cases and number >= cases:
            break
        with _recording() as steps:
            result = native.solve(field, rel_tol=DEEP_TOL)
        assert result.method.endswith(f"native {native.ROBUST.name}"), result.method
        n1, n2, n3 = field.shape
        scale = n1 / (n2 * n3) * float(field.max())  # energy -> S/m
        deep = steps[-1]["energy"] * scale
        exact = direct_sigma_eff(field) if reference == "lu" else deep
        drift = max(abs(s["tracked"] - s["energy"]) for s in steps) * scale / exact
        runs.append({"name": name, "reference": reference, "exact_S_m": exact, "scale": scale,
                     "steps": steps})
        print(f"{name}: {len(steps)} steps, deep/exact − 1 = {deep / exact - 1:+.1e}, "
              f"|tracked E − E| / G ≤ {drift:.1e}", flush=True)
        path.write_text(json.dumps(runs))


def _smallest_ritz(steps: list[dict]) -> float:
    """Smallest eigenvalue of CG's Lanczos tridiagonal after ``steps`` (inf without one: a
    β ≤ 0, which flexible CG's Polak-Ribiere β can give)."""
    a = np.array([s["alpha"] for s in steps])
    b = np.array([s["beta"] for s in steps[1:]])
    if np.any(~(b > 0)):
        return math.inf
    diagonal = 1.0 / a
    diagonal[1:] += b / a[:-1]
    if len(a) == 1:
        return float(diagonal[0])
    off = np.sqrt(b) / a[:-1]
    return float(eigvalsh_tridiagonal(diagonal, off, select="i", select_range=(0, 0))[0])


def _radau_bound(steps: list[dict], mu: float) -> float:
    """Gauss–Radau bound of the energy error after the last step for a lower bound ``mu`` of
    the smallest eigenvalue: ε_0 ≤ ρ_0/μ, ε_{j+1} ≤ U_j − d_j and 1/U_{j+1} = μ/ρ_{j+1} +
    1/(U_j − d_j). U − d ≤ 0 proves μ too large: inf."""
    bound = steps[0]["rho"] / mu
    for previous, step in zip(steps, steps[1:], strict=False):
        left = bound - previous["decrease"]
        if not left > 0:
            return math.inf
        bound = 1.0 / (mu / step["rho"] + 1.0 / left)
    left = bound - steps[-1]["decrease"]
    return left if left > 0 else math.inf


def _stops(steps: list[dict], rule: tuple, rel_tol: float) -> bool:
    kind, factor, window = (*rule, native.TAIL_WINDOW)[:3]
    if kind == "radau":
        decreases = [s["decrease"] for s in steps]
        if not decreases[-1] < decreases[-2]:  # never while the decrease is not falling
            return False
        error = _radau_bound(steps, _smallest_ritz(steps) / factor)
        return error * (1.0 + rel_tol) < rel_tol * steps[-1]["energy"]
    saved = native.STOP_RULE, native.TAIL_SAFETY, native.ENERGY_TAIL_SAFETY, native.TAIL_WINDOW
    native.STOP_RULE = kind
    native.TAIL_SAFETY = native.ENERGY_TAIL_SAFETY = factor
    native.TAIL_WINDOW = window
    try:
        history = native._History(steps[-1]["energy"], [s["decrease"] for s in steps])
        return native._converged(history, native.ROBUST, rel_tol, steps[-1]["current"])
    finally:
        (native.STOP_RULE, native.TAIL_SAFETY, native.ENERGY_TAIL_SAFETY,
         native.TAIL_WINDOW) = saved


def replay(run: dict, rule: tuple, rel_tol: float) -> tuple[int, float]:
    """(iterations, relative error of the returned value) where ``rule`` stops ``run``."""
    steps = run["steps"]
    for k in range(2, len(steps) + 1):  # _pcg asks the rule from step 2 on
        if _stops(steps[:k], rule, rel_tol):
            return k, steps[k - 1]["energy"] * run["scale"] / run["exact_S_m"] - 1.0
    return -1, math.nan  # never stopped within the record


def evaluate(path: Path) -> list[str]:
    runs = json.loads(path.read_text())
    label = {rule: (f"radau μ = θ_min/{rule[1]:g}" if rule[0] == "radau"
                    else f"{rule[0]} ×{rule[1]:g}"
                    + (f", window {rule[2]}" if len(rule) > 2 else "")) for rule in RULES}
    big = [i for i, run in enumerate(runs) if run["name"].startswith("128³")]
    lines = [f"{len(runs)} cases; iterations: sum over all, over the {len(big)} 128³ ones, "
             "and the 128³ cubes one by one", ""]
    for rel_tol in REL_TOLS:
        lines += [f"rel_tol {rel_tol:g}:", "",
                  "| rule | worst error / rel_tol | its, all | its, 128³ | 128³ one by one | "
                  "worst case |", "|---|---|---|---|---|---|"]
        for rule in RULES:
            results = [replay(run, rule, rel_tol) for run in runs]
            never = [runs[i]["name"] for i, r in enumerate(results) if r[0] < 0]
            worst = max(range(len(runs)), key=lambda i: results[i][1] if results[i][0] > 0
                        else -math.inf)
            ratio = results[worst][1] / rel_tol
            lines.append(
                f"| {label[rule]} | {ratio:.3f} | {sum(r[0] for r in results)} | "
                f"{sum(results[i][0] for i in big)} | "
                f"{' '.join(str(results[i][0]) for i in big)} | {runs[worst]['name']}"
                f"{'; never stopped: ' + ', '.join(never) if never else ''} |")
        lines.append("")
    return lines


# --compare: the native module flags that --timing's old and new set, with their two values
COMPARISONS = {"stop": {"STOP_RULE": ("current", "energy")},
               "passes": {"SPARSE_ISLANDS": (False, True), "FUSED_CG": (False, True)}}


def timing(repeats: int, size: int = 128, compare: str = "stop") -> list[str]:
    """CPU seconds of the default electronic solve (``effective_conductivity_S_m``'s field) on
    the bench cubes (``size``³, 0.4 µm), old and new (COMPARISONS[compare]) alternating."""
    import statistics
    import time

    torch.set_num_threads(1)
    native.warm_up()
    flags = COMPARISONS[compare]
    lines = ["old / new: " + ", ".join(f"native.{flag} = {old!r} / {new!r}"
                                       for flag, (old, new) in flags.items()), "",
             "| cube | its old → new | CPU-s old | CPU-s new | old / new | σ new / old − 1 |",
             "|---|---|---|---|---|---|"]
    sums = [0.0, 0.0]
    for seed in (0, 1, 2, 3):
        labels = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), size, 0.4, seed=seed,
                                    calendering=CALENDERING)
        field = _field(labels, *DEFAULT)
        times: list[list[float]] = [[], []]
        results = [None, None]
        saved = {flag: getattr(native, flag) for flag in flags}
        try:
            for _ in range(repeats):
                for which in (0, 1):  # alternate: both see the same load
                    for flag, values in flags.items():
                        setattr(native, flag, values[which])
                    start = time.process_time()
                    results[which] = native.solve(field, rel_tol=1e-3)
                    times[which].append(time.process_time() - start)
        finally:
            for flag, value in saved.items():
                setattr(native, flag, value)
        old, new = (statistics.median(t) for t in times)
        sums[0] += old
        sums[1] += new
        assert all(r.converged for r in results)
        change = results[1].relative_conductance / results[0].relative_conductance
        lines.append(f"| seed {seed} | {results[0].iterations} → {results[1].iterations} | "
                     f"{old:.3f} | {new:.3f} | {old / new:.2f}× | {change - 1:+.1e} |")
    lines.append(f"| **sum** | | {sums[0]:.3f} | {sums[1]:.3f} | {sums[0] / sums[1]:.2f}× | |")
    return lines


# 1/0.0101: contrast 99 (1/0.01 is 100.0000002 in float32: the robust method)
FAST_CONTRASTS = [(1.0, 1.0), (0.18, 10.0), (1.0, 0.1), (1.0, 0.0101)]


def _fast_cases(quick: bool):
    """(name, field, reference 'lu' or 'deep') at contrast <= FAST_MAX_CONTRAST."""
    def fields(labels):
        yield "pore", (labels == 0).astype(np.float32)
        for sam, scbd in FAST_CONTRASTS:
            yield f"{sam:g}/{scbd:g}", _field(labels, sam, scbd)

    for params in PARAMS_40:
        labels = generate_structure(ManufacturingParams(*params), 40, 1.0, seed=0,
                                    calendering=CALENDERING)
        for name, field in fields(labels):
            yield f"40³ 1 µm {params} {name}", field, "lu"
    for params in CORNERS_64:
        labels = generate_structure(ManufacturingParams(*params), 64, 0.4, seed=0,
                                    calendering=CALENDERING)
        for name, field in fields(labels):
            yield f"64³ 0.4 µm {params} {name}", field, "deep"
    if quick:
        return
    for seed in (0, 1, 2, 3):
        labels = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 128, 0.4, seed=seed,
                                    calendering=CALENDERING)
        for name, field in fields(labels):
            yield f"128³ 0.4 µm (0.9, 0.35, 0.5) seed {seed} {name}", field, "deep"


def fast_check(quick: bool) -> list[str]:
    """The fast method's error / rel_tol where it stops, per rel_tol: worst case and median."""
    import statistics

    from tests.test_solver_contrast import direct_sigma_eff

    torch.set_num_threads(1)
    errors: dict[float, list[tuple[float, str, int]]] = {tol: [] for tol in REL_TOLS}
    for name, field, reference in _fast_cases(quick):
        if reference == "lu":
            exact = direct_sigma_eff(field) / float(field.max())
        else:
            saved = native.FAST_MAX_CONTRAST
            native.FAST_MAX_CONTRAST = 0.0  # the robust method, far past rel_tol
            try:
                deep = native.solve(field, rel_tol=1e-10)
            finally:
                native.FAST_MAX_CONTRAST = saved
            assert deep.converged, name
            exact = deep.relative_conductance
        for tol in REL_TOLS:
            result = native.solve(field, rel_tol=tol)
            fast = result.method == f"native {native.FAST.name}"
            errors[tol].append(((result.relative_conductance / exact - 1) / tol,
                                name if fast else f"{name} ({result.method})",
                                result.iterations))
        print(name, " ".join(f"{e[-1][0]:+.3f}" for e in errors.values()), flush=True)
    lines = [f"{len(errors[REL_TOLS[0]])} fast solves; error / rel_tol where the fast stop "
             "stops", "", "| rel_tol | worst | case | its | median | > 1 |", "|---|---|---|---|---|---|"]
    for tol, rows in errors.items():
        worst = max(rows, key=lambda row: abs(row[0]))
        over = sum(abs(row[0]) > 1 for row in rows)
        lines.append(f"| {tol:g} | {worst[0]:+.3f} | {worst[1]} | {worst[2]} | "
                     f"{statistics.median(abs(r[0]) for r in rows):.3f} | {over} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--evaluate", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="only the 40³ and 64³ cases")
    parser.add_argument("--timing", type=int, default=0, metavar="REPEATS",
                        help="CPU-s of the default solve on the 128³ bench cubes, old vs new")
    parser.add_argument("--size", type=int, default=128, help="the --timing cubes' edge")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="stop",
                        help="what --timing's old and new differ by (see the docstring)")
    parser.add_argument("--cases", type=int, default=0, help="record only the first N (0: all)")
    parser.add_argument("--fast-check", action="store_true",
                        help="the fast method's stop against references (see the docstring)")
    args = parser.parse_args()
    if args.fast_check:
        print("\n".join(fast_check(args.quick)))
        print(f"load {os.getloadavg()[0]:.1f}")
    if args.timing:
        print("\n".join(timing(args.timing, args.size, args.compare)))
        print(f"load {os.getloadavg()[0]:.1f}")
    if args.record:
        record(args.record, args.quick, args.cases)
    path = args.evaluate or args.record
    if path:
        print(f"load {os.getloadavg()[0]:.1f}")
        print("\n".join(evaluate(path)))


if __name__ == "__main__":
    main()
