"""Benchmark: where one design's characterisation spends its CPU, before and after the fast paths.

One process, one torch thread, CPU time (``time.process_time``; wall time on a shared machine
means little). For each of ``--cubes`` procedural 128³ cubes (the paper fidelity's cube; a
design has 39 of them) it times every stage of ``kernels.metrics.volume.characterise_volume``
with the loop's default conductivities, twice, alternating:

* ``torch``: the native solver's plain torch operations, robust method cycle in float64 (what
  main ran before the fused kernels and the float32 cycle);
* ``fast``: the defaults now (fused numba kernels on CPU grids >= 96³, float32 cycle).

and checks that both give the same τ and σ_eff (within 0.01 %). Then the anchor of the issue's
solver targets, in the same run: TauFactor 1.2.1 (rel_tol 1e-3) against native on the pore
field and on an electronic field at σ_AM/σ_CBD = 1/0.1 S/m (TauFactor does not converge at the
loop's 1e-2/117 S/m contrast), each solve once after a warm-up.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_characterise_speed.py --cubes 2 \
        [--size 128] [--no-taufactor] [--markdown out.md]

About 2 CPU-minutes at 2 cubes of 128³ with TauFactor (its two solves take most of it).

``--stages``: instead, every stage of one cube's way through an evaluation (generation, the
zarr write and read, surface area, tortuosity, conductivity, particle size) with the solver's
defaults, alternating per cube between

* ``before``: main at the start of issue 22's session of 2026-12-03: native's finest level
  built by torch operations (``native.FUSED_SETUP = False``), the robust solve's stop referred
  to the electrode current (``native.STOP_RULE = "current"``), skimage's watershed seeds
  (``particle_size.USE_FUSED_SEEDS = False``);
* ``now``: the defaults (the finest level in one numba pass, the stop referred to the
  dissipated power, the numba seeds), plus the opt-in particle size on 2×2×2 blocks
  (``watershed_stride=2``) timed as its own row;

and checks that both give the same metrics (within 1e-6; σ_eff within 1e-3, the solve's
rel_tol, and the difference printed). ``--stages --before passes``: ``before`` is instead the
defaults with the robust solve's dense cluster corrections and torch CG steps
(``native.SPARSE_ISLANDS = native.FUSED_CG = False``): only the conductivity stage differs. (Until 2026-12-02 ``before`` was the numpy/torch paths
before the numba kernels: the table of "Speed: the robust solve's cluster corrections"; until
2026-12-03 the robust coarse correction at scale 1: "Speed: the robust solve over-corrected".) About
1 CPU-minute at 3 cubes of 128³.
``--stages --before inplace``: ``before`` is the defaults with the cycle's Jacobi sweeps in place
(``native.OUT_OF_PLACE_JACOBI = False``, the kernel until 2026-12-04): only the two solves differ.
``--stages --before faces``: ``before`` is the defaults with the pore solve's finest level on
stored faces (``native.BINARY_FACES = False``, until 2026-12-04) instead of face bits: only the
tortuosity differs.
``--stages --before floating``: ``before`` is the defaults with every high-conductivity cluster
in the robust solve's coarse space (``native.FLOATING_ISLANDS_ONLY = False``, until 2026-12-04)
instead of only the floating ones: only the conductivity differs.
``--stages --before dec04``: ``before`` is main at the start of 2026-12-04's second session
(f3f33f2): both of the above (stored faces, every cluster), the robust solve's finest faces in
float64 (``native.ROBUST_FLOAT32_FACES = False``) and the fast method's coarsest grid of up to
1000 cells (``native.FAST.coarsest_max_cells``, 64 since).
``--stages --before start``: ``before`` is main at the start of 2026-12-03's second session:
the dense cluster corrections and torch CG steps, the first box clip
(``_surface_kernels.FAST_CLIP = False``), the two-array flood
(``_watershed_kernels.PACKED_HEAP = False``) and skimage's surface (as ``--surface-before
skimage``).
``--surface-before skimage``: ``before`` also meshes the surface with skimage
(``surface_area.DEFAULT_METHOD = "skimage"``, the default until 2026-12-03; ``now`` the fused
pass), the surface metrics and the radius then compared within SURFACE_TOLERANCE.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernels.metrics import volume as V  # noqa: E402
from kernels.metrics.particle_size import am_particle_radius_um  # noqa: E402
from kernels.metrics.solvers import native, solve  # noqa: E402
from kernels.metrics.surface_area import DEFAULT_METHOD as _SURFACE_DEFAULT  # noqa: E402
from kernels.structure.procedural import ManufacturingParams, generate_structure  # noqa: E402

PARAMS = ManufacturingParams(am_wt_frac=0.9, porosity=0.35, binder_adhesion=0.5)
VOXEL_UM = 0.4  # the paper fidelity's voxel
STAGES = ("generate", "surface area", "tortuosity", "conductivity", "particle size")


def _cpu(fn):
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def _configure(mode: str) -> None:
    """'torch': main before this change; 'fast': the defaults now."""
    native.USE_FUSED = mode == "fast"
    cycle = torch.float32 if mode == "fast" else None
    native.ROBUST = dataclasses.replace(native.ROBUST, cycle_dtype=cycle)


def _stages(size: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    times: dict[str, float] = {}
    times["generate"], volume = _cpu(lambda: generate_structure(PARAMS, size, VOXEL_UM, seed=seed))
    times["surface area"], (ssa, _) = _cpu(lambda: V.specific_surface_areas(volume, VOXEL_UM))
    times["tortuosity"], (tau, _) = _cpu(lambda: V.tortuosity_factor(volume))
    times["conductivity"], sigma = _cpu(lambda: V.effective_conductivity_S_m(volume))
    times["particle size"], _ = _cpu(
        lambda: am_particle_radius_um(volume, VOXEL_UM, ssa["am_pore"] + ssa["am_cbd"]))
    return times, {"tau": tau, "sigma": sigma}


STORE_STAGES = ("generate", "zarr write + read", "surface area", "tortuosity", "conductivity",
                "particle size")
BLOCKS = "particle size, 2×2×2 blocks (opt-in)"
TOLERANCE = {"sigma": 1e-3}  # the solve's rel_tol; every other metric 1e-6
#: --surface-before skimage: the surface metrics of the two triangulations (total AM area
#: within 0.12 %, each label within 0.5 %, coverage within 0.0025 at 128³: docs/solvers.md,
#: "Surface area without skimage"), and the radius that takes that area (within 0.05 %)
SURFACE_TOLERANCE = {"am_pore": 5e-3, "am_cbd": 5e-3, "coverage": 4e-3, "radius": 1e-3,
                     "radius, blocks": 1e-3}


BEFORE = "session"  # --before: what the --stages "before" column is (see the docstring)


def _configure_stages(mode: str, surface_before: str | None = None) -> None:
    """'before': main before issue 22's session of 2026-12-03 (torch set-up, the stop on the
    electrode current, skimage's seeds; skimage's surface with surface_before="skimage"), or
    with BEFORE "passes" the defaults with the dense cluster corrections and torch CG steps,
    or with BEFORE "start" main at the start of 2026-12-03's second session (those, the first
    box clip, the two-array flood and skimage's surface); 'now': the defaults."""
    from kernels.metrics import _surface_kernels, _watershed_kernels, particle_size, surface_area
    from kernels.structure import procedural

    surface_area.DEFAULT_METHOD = (surface_before if mode == "before" and surface_before
                                   else _SURFACE_DEFAULT)
    procedural.USE_FUSED = surface_area.USE_FUSED = particle_size.USE_FUSED = True
    native.FUSED_ISLANDS = True
    native.SPARSE_ISLANDS = native.FUSED_CG = mode != "before" or BEFORE == "session"
    _surface_kernels.FAST_CLIP = _watershed_kernels.PACKED_HEAP = (mode != "before"
                                                                   or BEFORE != "start")
    # every 'before' predates the out-of-place Jacobi sweeps (2026-12-04); BEFORE "inplace"
    # compares only them
    native.OUT_OF_PLACE_JACOBI = mode != "before" or BEFORE in ("faces", "floating", "dec04")
    # every 'before' predates the face bits of a binary finest level (2026-12-04); BEFORE
    # "faces" compares only them
    native.BINARY_FACES = mode != "before" or BEFORE == "floating"
    # and the robust solve's coarse space of only the floating clusters (2026-12-04); BEFORE
    # "floating" compares only it, "dec04" every change of that day
    native.FLOATING_ISLANDS_ONLY = mode != "before" or BEFORE == "faces"
    newest = mode != "before" or BEFORE in ("faces", "floating")
    native.ROBUST_FLOAT32_FACES = newest
    native.FAST = dataclasses.replace(native.FAST, coarsest_max_cells=(
        native.FAST_COARSEST_MAX_CELLS if newest else native.COARSEST_MAX_CELLS))
    if BEFORE in ("passes", "start", "inplace", "faces", "floating", "dec04"):
        mode = "now"
    native.FUSED_SETUP = mode != "before"
    native.STOP_RULE = "current" if mode == "before" else "energy"
    particle_size.USE_FUSED_SEEDS = mode != "before"


def _store_stages(size: int, seed: int, mode: str, folder: Path) -> tuple[dict, dict]:
    """CPU seconds of each stage of one cube, and the metrics it gave."""
    from jobs.store import DesignStore

    times: dict[str, float] = {}
    times["generate"], volume = _cpu(lambda: generate_structure(PARAMS, size, VOXEL_UM, seed=seed))
    values = {"voxels crc32": float(zlib.crc32(volume.tobytes()))}  # the same structure

    def store_round_trip() -> np.ndarray:
        store = DesignStore.create(folder, seed, n_samples=1, size_voxels=size, attributes={})
        store.write_sample(0, volume)
        reader = DesignStore.open(folder, seed)
        return reader.read_sample(0)

    times["zarr write + read"], stored = _cpu(store_round_trip)
    assert np.array_equal(stored, volume)
    times["surface area"], (ssa, coverage) = _cpu(lambda: V.specific_surface_areas(stored,
                                                                                  VOXEL_UM))
    times["tortuosity"], (tau, _) = _cpu(lambda: V.tortuosity_factor(stored))
    times["conductivity"], sigma = _cpu(lambda: V.effective_conductivity_S_m(stored))
    times["particle size"], radius = _cpu(
        lambda: am_particle_radius_um(stored, VOXEL_UM, ssa["am_pore"] + ssa["am_cbd"]))
    extra = {}
    if mode == "now":
        times[BLOCKS], extra["radius, blocks"] = _cpu(
            lambda: am_particle_radius_um(stored, VOXEL_UM, ssa["am_pore"] + ssa["am_cbd"],
                                          watershed_stride=2))
    return times, {**values, **ssa, "coverage": coverage, "tau": tau, "sigma": sigma,
                   "radius": radius, **extra}


def stage_profile(size: int, cubes: int, surface_before: str | None = None) -> list[str]:
    """The --stages table: CPU s per cube by stage, before and now, in the same run."""
    tolerance = {**TOLERANCE, **(SURFACE_TOLERANCE if surface_before else {})}
    import tempfile

    _configure("fast")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("before", "now"):  # warm-up: imports, numba's cached kernels
            _configure_stages(mode, surface_before)
            _store_stages(64, 1000, mode, Path(tmp) / f"warm_{mode}")
            _store_stages(size, 1001, mode, Path(tmp) / f"warm_{mode}")
        per_mode = {m: {s: [] for s in STORE_STAGES} for m in ("before", "now")}
        blocks: list[float] = []
        notes: list[str] = []
        for cube in range(cubes):
            values = {}
            for mode in ("before", "now"):  # alternate: both see the same load
                _configure_stages(mode, surface_before)
                times, values[mode] = _store_stages(size, 1 + cube, mode, Path(tmp) / mode)
                for stage, t in times.items():
                    if stage == BLOCKS:
                        blocks.append(t)
                    else:
                        per_mode[mode][stage].append(t)
            for key, a in values["before"].items():
                b = values["now"][key]
                assert abs(a - b) <= tolerance.get(key, 1e-6) * abs(a), (key, a, b)
            notes.append(f"cube {cube + 1}: σ_eff now/before − 1 = "
                         f"{values['now']['sigma'] / values['before']['sigma'] - 1:+.2e}; "
                         f"radius on blocks / on voxels − 1 = "
                         f"{values['now']['radius, blocks'] / values['now']['radius'] - 1:+.2%}")
    _configure_stages("now")
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load "
             f"{os.getloadavg()[0]:.1f}; {cubes} cubes of {size}³, CPU s per cube (median), "
             "one thread; metrics equal within 1e-6 (σ_eff within 1e-3"
             + ("; 'before' meshed by skimage, surface metrics and radius within "
                f"{SURFACE_TOLERANCE}" if surface_before else "") + ")", "",
             "| stage | before | now | speed-up |", "|---|---|---|---|"]
    totals = {m: sum(statistics.median(v) for v in per_mode[m].values()) for m in per_mode}
    for stage in STORE_STAGES:
        before = statistics.median(per_mode["before"][stage])
        now = statistics.median(per_mode["now"][stage])
        lines.append(f"| {stage} | {before:.3f} | {now:.3f} | {before / now:.2f}× |")
    lines.append(f"| **total per cube** | {totals['before']:.2f} | {totals['now']:.2f} | "
                 f"{totals['before'] / totals['now']:.2f}× |")
    lines.append(f"| **39 cubes (one design)** | {39 * totals['before']:.0f} | "
                 f"{39 * totals['now']:.0f} | |")
    opt_in = statistics.median(blocks)
    now_ps = statistics.median(per_mode["now"]["particle size"])
    lines.append(f"| {BLOCKS} | | {opt_in:.3f} | {now_ps / opt_in:.2f}× vs now |")
    total_opt = totals["now"] - now_ps + opt_in
    lines.append(f"| **39 cubes, with the opt-in particle size** | | {39 * total_opt:.0f} | |")
    return lines + [""] + notes


def _anchor(size: int) -> list[dict]:
    """TauFactor vs native (fast) on a pore and an electronic field, CPU seconds."""
    volume = generate_structure(PARAMS, size, VOXEL_UM, seed=100)
    fields = {"pore": (volume == 0).astype(np.float32),
              "electronic 1/0.1 S/m": np.array([0, 1.0, 0.1], np.float32)[volume]}
    warm = generate_structure(PARAMS, 48, VOXEL_UM, seed=0)  # packs: 2.4 diameters
    solve((warm == 0).astype(np.float32), backend="taufactor")
    rows = []
    _configure("fast")
    for name, field in fields.items():
        t_tf, r_tf = _cpu(lambda f=field: solve(f, backend="taufactor", rel_tol=1e-3))
        t_nat, r_nat = _cpu(lambda f=field: solve(f, backend="native", rel_tol=1e-3))
        rows.append({"solve": name, "taufactor_s": t_tf, "native_s": t_nat,
                     "ratio": t_tf / t_nat, "taufactor": r_tf.relative_conductance,
                     "native": r_nat.relative_conductance, "tf_method": r_tf.method,
                     "iterations": r_nat.iterations})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--no-taufactor", action="store_true")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--surface-before", choices=("skimage",), default=None,
                        help="with --stages: 'before' meshes with skimage (the surface default "
                        "until 2026-12-03); surface metrics then compared within "
                        "SURFACE_TOLERANCE")
    parser.add_argument("--stages", action="store_true",
                        help="every stage of a cube, before/now (surface area, distance "
                             "transform, store read); see the module docstring")
    parser.add_argument("--before", choices=("session", "passes", "start", "inplace", "faces",
                                             "floating", "dec04"),
                        default="session",
                        help="--stages: 'passes' compares only the robust solve's passes "
                             "around its cycle (native.SPARSE_ISLANDS, FUSED_CG); 'start' "
                             "main at the start of 2026-12-03's second session; 'inplace' "
                             "only the in-place Jacobi sweeps (native.OUT_OF_PLACE_JACOBI); "
                             "'faces' only the pore solve's stored faces (native.BINARY_FACES); "
                             "'floating' only every cluster in the robust coarse space "
                             "(native.FLOATING_ISLANDS_ONLY); 'dec04' both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global BEFORE
    BEFORE = args.before
    if BEFORE == "start":   # its surface is skimage's: compared within SURFACE_TOLERANCE
        args.surface_before = "skimage"
    if args.stages:
        text = "\n".join(stage_profile(args.size, args.cubes, args.surface_before))
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
        return
    # warm-up: imports, numba's cached kernels, first-call costs
    for mode in ("torch", "fast"):
        _configure(mode)
        _stages(24, seed=0)
        native.FUSED_MIN_CELLS, saved = 0, native.FUSED_MIN_CELLS
        _stages(24, seed=0)
        native.FUSED_MIN_CELLS = saved
    per_mode: dict[str, dict[str, list[float]]] = {m: {s: [] for s in STAGES}
                                                   for m in ("torch", "fast")}
    for cube in range(args.cubes):
        values = {}
        for mode in ("torch", "fast"):  # alternate: both see the same load
            _configure(mode)
            times, values[mode] = _stages(args.size, seed=1 + cube)
            for stage, t in times.items():
                per_mode[mode][stage].append(t)
        for key in ("tau", "sigma"):
            a, b = values["torch"][key], values["fast"][key]
            assert abs(a - b) <= 1e-4 * abs(a), (key, a, b)
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load "
             f"{os.getloadavg()[0]:.1f}; {args.cubes} cubes of {args.size}³, CPU s per cube "
             "(median), one thread", "",
             "| stage | torch (before) | fast (now) | speed-up |", "|---|---|---|---|"]
    totals = {}
    for mode in per_mode:
        totals[mode] = sum(statistics.median(v) for v in per_mode[mode].values())
    for stage in STAGES:
        before = statistics.median(per_mode["torch"][stage])
        after = statistics.median(per_mode["fast"][stage])
        lines.append(f"| {stage} | {before:.2f} | {after:.2f} | {before / after:.2f}× |")
    lines.append(f"| **total per cube** | {totals['torch']:.2f} | {totals['fast']:.2f} | "
                 f"{totals['torch'] / totals['fast']:.2f}× |")
    lines.append(f"| **39 cubes (one design)** | {39 * totals['torch']:.0f} | "
                 f"{39 * totals['fast']:.0f} | |")
    if not args.no_taufactor:
        lines += ["", "| solve | TauFactor s | native s | native its | ratio | "
                  "relative conductance TF / native |", "|---|---|---|---|---|---|"]
        for row in _anchor(args.size):
            lines.append(f"| {row['solve']} | {row['taufactor_s']:.2f} | {row['native_s']:.2f} | "
                         f"{row['iterations']} | **{row['ratio']:.1f}×** | "
                         f"{row['taufactor']:.6g} / {row['native']:.6g} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
