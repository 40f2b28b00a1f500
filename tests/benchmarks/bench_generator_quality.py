"""How close are generated volumes to the procedural simulator they were trained on?

For parameter points on the training grid, between grid points, and outside the training
envelope, this draws `--seeds` volumes from the generator and from the procedural simulator
(same size and voxel size) and compares the four metrics of kernels.metrics.volume (volume fractions,
specific surface areas, tortuosity factor, effective conductivity) and two-point correlations
(kernels.structure.two_point: correlation lengths of AM and pore along the thickness and in-plane, and the
RMS distance between S2 curves). Seed-to-seed differences of the procedural volumes are
reported as the yardstick: a generator is as good as it gets when its distance to the simulator
is no larger than the simulator's distance to itself.

    python tests/benchmarks/bench_generator_quality.py --model default --size 64 --seeds 2 \
        --json quality.json --docs docs/generator.md [--cache procedural_metrics.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

POINTS = [  # (label, kind, params)
    ("A", "grid", {"am_wt_frac": 0.90, "porosity": 0.35, "binder_adhesion": 0.5}),
    ("B", "grid", {"am_wt_frac": 0.85, "porosity": 0.25, "binder_adhesion": 0.0}),
    ("C", "between", {"am_wt_frac": 0.92, "porosity": 0.30, "binder_adhesion": 0.25}),
    ("D", "between", {"am_wt_frac": 0.88, "porosity": 0.40, "binder_adhesion": 0.75}),
    ("E", "outside", {"am_wt_frac": 0.97, "porosity": 0.50, "binder_adhesion": 0.5}),
    ("F", "outside", {"am_wt_frac": 0.82, "porosity": 0.22, "binder_adhesion": 1.0}),
]
MAX_LAG = 16
TABLE_START = "<!-- quality table: start (written by tests/benchmarks/bench_generator_quality.py) -->"
TABLE_END = "<!-- quality table: end -->"


def measure(volume: np.ndarray, voxel_um: float) -> dict[str, float]:
    from kernels.metrics.volume import characterise_volume
    from kernels.structure.two_point import correlation_length_voxels, directional_s2

    m = characterise_volume(volume, voxel_um).to_dict()
    out = {
        "ssa_am_pore_per_um": m["specific_surface_area_per_um"]["am_pore"],
        "ssa_am_cbd_per_um": m["specific_surface_area_per_um"]["am_cbd"],
        "cbd_coverage": m["cbd_coverage"],
        "tortuosity_factor": m["tortuosity_factor"] if m["tortuosity_factor"] is not None else math.inf,
        "conductivity_S_m": m["effective_conductivity_S_m"],
    }
    for phase, name in ((1, "am"), (0, "pore")):
        s2 = directional_s2(volume, phase, MAX_LAG)
        out[f"corr_len_{name}_through_um"] = correlation_length_voxels(s2[0]) * voxel_um
        out[f"corr_len_{name}_inplane_um"] = 0.5 * (correlation_length_voxels(s2[1])
                                                     + correlation_length_voxels(s2[2])) * voxel_um
        out[f"_s2_{name}"] = s2.tolist()
    return out


def s2_distance(a: list[dict], b: list[dict], same: bool) -> float:
    """Mean RMS distance between the S2 curves (AM and pore, all axes) of two sets of volumes;
    `same` skips comparing a volume with itself."""
    from kernels.structure.two_point import s2_curve_distance

    d = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if same and j <= i:
                continue
            d.append(np.mean([s2_curve_distance(x[k], y[k]) for k in ("_s2_am", "_s2_pore")]))
    return float(np.mean(d)) if d else math.nan


def summarise(rows: list[dict]) -> dict[str, tuple[float, float]]:
    keys = [k for k in rows[0] if not k.startswith("_")]
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    return out


def procedural_rows(params: dict, size: int, voxel_um: float, seeds: int,
                    cache: dict | None, calendering: str) -> tuple[list[dict], float]:
    """Metrics of the procedural volumes (deterministic per seed, so they may come from a cache;
    the keys of "flatten", the only model when the cache was started, name no model)."""
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    rows, t_total = [], 0.0
    for s in range(seeds):
        key = json.dumps([params, size, voxel_um, 100 + s]
                         + ([] if calendering == "flatten" else [calendering]), sort_keys=True)
        if cache is not None and key in cache:
            rows.append(cache[key]["row"])
            t_total += cache[key]["seconds"]
            continue
        t0 = time.perf_counter()
        volume = generate_structure(ManufacturingParams(**params), size, voxel_um, seed=100 + s,
                                    calendering=calendering)
        seconds = time.perf_counter() - t0
        rows.append(measure(volume, voxel_um))
        t_total += seconds
        if cache is not None:
            cache[key] = {"row": rows[-1], "seconds": seconds}
    return rows, t_total / seeds


def run(model_source: str | None, size: int, seeds: int, voxel_um: float,
        cache: dict | None = None, calendering: str | None = None) -> dict:
    """Measure every point; with model_source None only the procedural side (to fill a cache).
    The simulator calenders as the model's training volumes were (`trained_calendering`), or as
    `calendering` says, or by default."""
    from jobs.train import load_model
    from kernels.generator.model import in_training_envelope, sample, trained_calendering
    from kernels.structure.procedural import DEFAULT_CALENDERING

    model = load_model(model_source) if model_source is not None else None
    if model is not None and abs(model.config.voxel_um - voxel_um) > 1e-12:
        raise ValueError(f"the model makes {model.config.voxel_um} um voxels, not {voxel_um}")
    learnt = trained_calendering(model) if model is not None else None
    if calendering is not None and learnt is not None and calendering != learnt:
        raise ValueError(f"--calendering {calendering!r}: the model learnt {learnt!r} volumes")
    calendering = calendering or learnt or DEFAULT_CALENDERING
    results = []
    for label, kind, params in POINTS:
        pm, t_proc = procedural_rows(params, size, voxel_um, seeds, cache, calendering)
        if model is None:
            print(f"{label} procedural done", flush=True)
            continue
        members = list(getattr(model, "members", [None]))
        t0 = time.perf_counter()
        gen = np.concatenate([sample(params, n=seeds, size=size, seed=100, model=model,
                                     member=None if m is None else k)
                              for k, m in enumerate(members)])
        t_gen = (time.perf_counter() - t0) / len(gen)
        gm = [measure(v, voxel_um) for v in gen]
        per_member = [summarise(gm[k * seeds:(k + 1) * seeds]) for k in range(len(members))]
        inside, reason = in_training_envelope(params, model)
        results.append({
            "label": label, "kind": kind, "params": params, "in_envelope": inside, "reason": reason,
            "generated": summarise(gm), "procedural": summarise(pm),
            "s2_rms_gen_vs_proc": s2_distance(gm, pm, same=False),
            "s2_rms_proc_vs_proc": s2_distance(pm, pm, same=True),
            "s2_rms_gen_vs_gen": s2_distance(gm, gm, same=True),
            "seconds_per_volume": {"generated": t_gen, "procedural": t_proc},
            "member_means": ([{k: v[0] for k, v in m.items()} for m in per_member]
                             if len(members) > 1 else None),
        })
        print(f"{label} {kind} done", flush=True)
    info = getattr(model, "training_info", {})
    return {"model": model_source, "size": size, "seeds": seeds, "voxel_um": voxel_um,
            "training_steps": info.get("steps"), "training_wall_s": info.get("wall_s"),
            "points": results}


COLUMNS = [  # (key, header, format)
    ("ssa_am_pore_per_um", "SSA AM-pore 1/µm", "{:.3f}"),
    ("ssa_am_cbd_per_um", "SSA AM-CBD 1/µm", "{:.3f}"),
    ("cbd_coverage", "CBD coverage", "{:.2f}"),
    ("tortuosity_factor", "τ pore", "{:.2f}"),
    ("conductivity_S_m", "σ_eff S/m", "{:.3f}"),
    ("corr_len_am_through_um", "ℓ AM ⊥ µm", "{:.2f}"),
    ("corr_len_am_inplane_um", "ℓ AM ∥ µm", "{:.2f}"),
]


#: the issue's yardstick: a metric passes within the larger of 10 % and the simulator's own
#: seed-to-seed spread; two-point curves within 2x the simulator's seed-to-seed distance
REL_TOLERANCE = 0.10
S2_FACTOR = 2.0


def point_verdict(p: dict) -> dict[str, bool]:
    """Which criteria one point passes (metrics of COLUMNS[:5] and the S2 curves)."""
    out = {}
    for key, _, _ in COLUMNS[:5]:
        g, (r, sd) = p["generated"][key][0], p["procedural"][key]
        if not (math.isfinite(g) and math.isfinite(r)):
            out[key] = math.isinf(g) and math.isinf(r)
            continue
        if abs(r) < 1e-3:      # e.g. no bare AM-pore interface at full CBD coverage
            out[key] = abs(g - r) < 1e-3
            continue
        tol = max(REL_TOLERANCE, sd / abs(r) if math.isfinite(sd) else 0.0)
        out[key] = abs(g - r) / abs(r) <= tol
    if math.isfinite(p["s2_rms_proc_vs_proc"]):   # needs >= 2 simulator seeds
        out["s2"] = p["s2_rms_gen_vs_proc"] <= S2_FACTOR * p["s2_rms_proc_vs_proc"]
    return out


def member_spread(p: dict) -> float | None:
    """Median over the five metrics of the ensemble members' relative spread (std of the
    members' means / their mean) at one point; None for a single model."""
    means = p.get("member_means")
    if not means:
        return None
    rel = []
    for key, _, _ in COLUMNS[:5]:
        v = np.array([m[key] for m in means], dtype=float)
        if np.all(np.isfinite(v)) and abs(v.mean()) > 1e-3:
            rel.append(float(np.std(v, ddof=1) / abs(v.mean())))
    return float(np.median(rel)) if rel else None


def markdown(report: dict) -> str:
    ensemble = any(p.get("member_means") for p in report["points"])
    lines = [
        f"Model `{report['model']}` ({report['training_steps']} training steps, "
        f"{(report['training_wall_s'] or 0) / 60:.0f} min of training, wall); {report['seeds']} "
        "volumes of "
        f"{report['size']}³ at {report['voxel_um']} µm per point and generator (member); "
        "each cell is `generated / procedural` (mean over seeds). Volume fractions are exact "
        "for both by construction. S2 RMS: distance between AM and pore two-point curves, "
        "generated-vs-procedural (yardstick: procedural seed-vs-seed).",
        "",
        "| point | params (w_AM, ε, adhesion) | where | "
        + " | ".join(h for _, h, _ in COLUMNS) + " | S2 RMS gen-proc (proc-proc) | passes |"
        + (" member spread |" if ensemble else ""),
        "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|" + ("---|" if ensemble else ""),
    ]
    verdict = {p["label"]: point_verdict(p) for p in report["points"]}
    for p in report["points"]:
        q = p["params"]
        cells = []
        for key, _, fmt in COLUMNS:
            g, r = p["generated"][key][0], p["procedural"][key][0]
            cells.append(f"{fmt.format(g)} / {fmt.format(r)}")
        where = p["kind"] + ("" if p["in_envelope"] else " (flagged)")
        lines.append(f"| {p['label']} | {q['am_wt_frac']}, {q['porosity']}, {q['binder_adhesion']} | "
                     f"{where} | " + " | ".join(cells)
                     + f" | {p['s2_rms_gen_vs_proc']:.4f} ({p['s2_rms_proc_vs_proc']:.4f}) | "
                     + f"{sum(verdict[p['label']].values())}/{len(verdict[p['label']])} |"
                     + (f" {100 * member_spread(p):.1f} % |" if ensemble else ""))
    t_gen = np.mean([p["seconds_per_volume"]["generated"] for p in report["points"]])
    t_proc = np.mean([p["seconds_per_volume"]["procedural"] for p in report["points"]])
    lines += ["", f"Time per {report['size']}³ volume on this (shared) CPU: generated {t_gen:.2f} s, "
              f"procedural {t_proc:.2f} s (timings under varying load; procedural ones may come "
              "from the --cache of an earlier run).", ""]
    for key, header, _ in COLUMNS[:5]:
        rel = [abs(p["generated"][key][0] - p["procedural"][key][0]) / abs(p["procedural"][key][0])
               for p in report["points"]
               if math.isfinite(p["generated"][key][0]) and math.isfinite(p["procedural"][key][0])
               and abs(p["procedural"][key][0]) > 1e-3]
        spread = [p["procedural"][key][1] / abs(p["procedural"][key][0]) for p in report["points"]
                  if math.isfinite(p["procedural"][key][1]) and abs(p["procedural"][key][0]) > 1e-3]
        if rel:
            lines.append(f"- {header}: median |generated - procedural| / procedural = "
                         f"{100 * np.median(rel):.0f} % (procedural seed-to-seed spread "
                         f"{100 * np.median(spread):.0f} %)")
    off_grid = [p for p in report["points"] if p["kind"] != "grid"]
    whole = [p["label"] for p in off_grid if all(verdict[p["label"]].values())]
    lines.append(f"- Criteria (issue 17): each metric within max({100 * REL_TOLERANCE:.0f} %, the "
                 f"simulator's seed-to-seed spread), S2 RMS within {S2_FACTOR:g}x the simulator's "
                 f"seed-to-seed distance. Off-grid points passing every criterion: {len(whole)} of "
                 f"{len(off_grid)} ({', '.join(whole) or 'none'}); per criterion, off-grid points "
                 "passing: " + ", ".join(
                     f"{name} {sum(verdict[p['label']].get(key, False) for p in off_grid)}"
                     f"/{len(off_grid)}"
                     for key, name in [(k, h) for k, h, _ in COLUMNS[:5]] + [("s2", "S2")]))
    if ensemble:
        inside = [member_spread(p) for p in report["points"] if p["in_envelope"]]
        outside = [member_spread(p) for p in report["points"] if not p["in_envelope"]]
        lines.append(f"- Ensemble member spread (median over the five metrics of std/mean of "
                     f"the members' means): inside the envelope {100 * np.median(inside):.1f} %, "
                     f"outside {100 * np.median(outside):.1f} %" if inside and outside else "")
    return "\n".join(lines)


def write_docs(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{TABLE_START}\n{table}\n{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--voxel-um", type=float, default=0.4)
    parser.add_argument("--cache", type=Path, default=None,
                        help="JSON file of procedural metrics to reuse (they are seeded)")
    parser.add_argument("--procedural-only", action="store_true", help="only fill --cache")
    parser.add_argument("--calendering", default=None, choices=("flatten", "rearrange"),
                        help="the simulator's calendering (default: the model's training "
                        "volumes', else the simulator's default)")
    args = parser.parse_args()
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    try:
        report = run(None if args.procedural_only else args.model, args.size, args.seeds,
                     args.voxel_um, cache, args.calendering)
    finally:
        if args.cache:
            args.cache.write_text(json.dumps(cache, default=float, indent=0))
    if args.procedural_only:
        return
    table = markdown(report)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    if args.docs:
        write_docs(args.docs, table)


if __name__ == "__main__":
    main()
