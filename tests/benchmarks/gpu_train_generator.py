"""One prepared GPU session for the generator: train, checkpoint, evaluate on held-out points,
write the weights and the quality table back.

    python tests/benchmarks/gpu_train_generator.py --out-dir "$OUT" --minutes 8 \
        [--method slicegan] [--init-from default] [--resume-dir DIR] [--batch 16] [--crop 64]
    python tests/benchmarks/gpu_train_generator.py --out-dir /tmp/dry --dry-run   # CPU, ~1 min

`--dry-run` runs every step at toy sizes (8 corner points of the grid at 48^3, 2 training
steps at batch 2 x 16^3 crops, the benchmark at 32^3 with the simulator measured too), so the
script is known to work end to end before a GPU session is spent on it.

Steps: (1) the default procedural grid (27 points, 96^3 at 0.4 um) is simulated; (2) the model
trains on CUDA when torch sees one (else the CPU, the same code) for --minutes, checkpointing
every --checkpoint-every steps into --out-dir (`model.pt`, `model.pt.ckpt`, `model.loss.png`);
a `--resume-dir` holding an earlier session's `model.pt` + `model.pt.ckpt` is copied in first so
training continues bit for bit, on either device; (3) the quality benchmark
(bench_generator_quality.py) compares the model with the simulator at the six benchmark points
(two on the training grid, two between grid points, two outside the envelope) using the shipped
procedural-metrics cache, so only the model's volumes are measured; (4) `quality.md`,
`quality.json` and `session.json` (device, steps run here, step rate, wall times) are written
next to the weights. Everything lands in --out-dir, so one `run` call brings it all back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))
CACHE = HERE / "data" / "generator_quality_procedural_64.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time")
    parser.add_argument("--method", default="slicegan", choices=["slicegan", "statistics"])
    parser.add_argument("--init-from", default="default",
                        help="'default', a model file, or 'none' for fresh weights")
    parser.add_argument("--resume-dir", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--n-critic", type=int, default=5)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--max-lag", type=int, default=16,
                        help="kept in the model config: must match a resumed checkpoint's")
    parser.add_argument("--eval-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="stop after this many steps in this session (default: --minutes)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step at toy sizes on whatever device (see the docstring)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.batch, args.crop, args.max_lag = 2, 16, 12
        args.eval_size, args.checkpoint_every = 32, 1
        args.steps = 2 if args.steps is None else args.steps

    import bench_generator_quality as bench
    import torch

    from jobs.train import TrainOptions, train_generator
    from jobs.training_data import procedural_training_set

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.pt"
    if args.resume_dir is not None:
        for name in ("model.pt", "model.pt.ckpt"):
            shutil.copy2(args.resume_dir / name, out_dir / name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    grid = {"am_wt_frac": [0.85, 0.95], "porosity": [0.25, 0.45],
            "binder_adhesion": [0.0, 1.0]} if args.dry_run else None
    # the dry run's volumes: 48^3 at 0.4 um (2.4 particle diameters, the fewest the default round
    # particles pack reliably at the grid's densest corner); the real run's 96^3
    data = procedural_training_set(grid, size_voxels=48 if args.dry_run else 96, voxel_um=0.4)
    t_data = time.perf_counter() - t0
    steps_before = 0
    if (out_dir / "model.pt.ckpt").is_file():
        steps_before = len(torch.load(out_dir / "model.pt.ckpt", weights_only=True)["history"])
    steps = 10 ** 7 if args.steps is None else steps_before + args.steps
    options = TrainOptions(method=args.method, steps=steps, batch=args.batch,
                           crop_voxels=args.crop, device=device,
                           init_from=None if args.init_from == "none" else args.init_from,
                           learning_rate=1e-4 if args.method == "slicegan" else 2e-3,
                           critic_learning_rate=1e-4, n_critic=args.n_critic,
                           crisp_weight=1.0, max_lag_voxels=args.max_lag,
                           slices_per_axis=args.crop, checkpoint_every=args.checkpoint_every,
                           time_limit_s=60 * args.minutes)
    t1 = time.perf_counter()
    last = [0.0]

    def log(step: int, total: int, parts: dict[str, float]) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in parts.items()), flush=True)

    summary = train_generator(data, model_path, options, resume=True, progress=log)
    t_train = time.perf_counter() - t1
    steps_here = summary["steps"] - steps_before
    # the shipped cache holds the simulator's 64^3 metrics; other sizes are measured here
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() and args.eval_size == 64 else {}
    t2 = time.perf_counter()
    report = bench.run(str(model_path), args.eval_size, args.seeds, 0.4, cache)
    table = bench.markdown(report)
    (out_dir / "quality.md").write_text(table + "\n")
    (out_dir / "quality.json").write_text(json.dumps(report, indent=1, default=float))
    session = {"device": device,
               "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               "method": args.method, "steps_before": steps_before, "steps_here": steps_here,
               "steps_total": summary["steps"], "train_s": t_train,
               "steps_per_s": steps_here / t_train if t_train > 0 else None,
               "data_s": t_data, "eval_s": time.perf_counter() - t2,
               "dry_run": args.dry_run,
               "options": {"batch": args.batch, "crop": args.crop, "n_critic": args.n_critic,
                           "max_lag": args.max_lag, "eval_size": args.eval_size}}
    (out_dir / "session.json").write_text(json.dumps(session, indent=1))
    print(table)
    print(json.dumps(session))
    return session


if __name__ == "__main__":
    main()
