"""Generation speed at 128^3 on the CPU: the trained generator against the procedural simulator,
both measured in the same process, one thread, CPU time (not wall: the machine may be shared).

    python tests/benchmarks/bench_generator_speed.py [--size 128] [--repeats 3] [--model default]

Rows: the simulator (`kernels.structure.procedural.generate_structure`); the net by its reference
form (nearest resize + 3x3x3 convolution, `ConditionalGenerator.forward`) and by the inference
form `sample` uses (coarse-grid 2x2x2 kernels, FiLM folded, channels-last:
`ConditionalGenerator.forward_fast`), each with the exact-fraction decoding; and the same
weights with `output_upsample=2` (logits at twice the voxel size, interpolated), which is a
different model (its held-out table is in docs/generator.md), timed for comparison only.
The ratio column is CPU time over the simulator's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def cpu_seconds(fn, repeats: int) -> float:
    """Median CPU time of `repeats` calls after one warm-up call."""
    fn(0)
    times = []
    for k in range(repeats):
        t0 = time.process_time()
        fn(k + 1)
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from jobs.train import load_model
    from kernels.generator import model as gen
    from kernels.generator.network import ConditionalGenerator, wrap_latent
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    params = {"am_wt_frac": 0.90, "porosity": 0.35, "binder_adhesion": 0.5}
    net = load_model(args.model)
    size = args.size
    fractions = gen.target_fractions(gen.params_to_dict(params))
    cond = torch.from_numpy(gen.condition_vector(gen.params_to_dict(params), net.config))[None]

    def simulator(seed: int) -> None:
        generate_structure(ManufacturingParams(**params), size, 0.4, seed=seed)

    def reference(seed: int) -> None:
        latent = gen._latent(net.config, -(-size // net.config.upsample_factor), seed, 0)
        with torch.inference_mode():
            logits = net(wrap_latent(latent), cond)[0]
        gen.decode_exact(logits[:, :size, :size, :size], fractions)

    def fast(seed: int) -> None:
        gen.sample(params, n=1, size=size, seed=seed, model=net)

    coarse_net = ConditionalGenerator(dataclasses.replace(net.config, output_upsample=2))
    coarse_net.load_state_dict(net.state_dict())
    coarse_net.eval()

    def coarse(seed: int) -> None:
        gen.sample(params, n=1, size=size, seed=seed, model=coarse_net)

    rows = [("procedural simulator", simulator), ("net, reference form", reference),
            ("net, inference form (sample)", fast),
            ("same weights, output_upsample=2", coarse)]
    times = {name: cpu_seconds(fn, args.repeats) for name, fn in rows}
    anchor = times["procedural simulator"]
    print(f"{size}^3, one thread, median CPU-s of {args.repeats} after a warm-up "
          f"(torch {torch.__version__}):")
    print("| generator | CPU-s | / simulator |\n|---|---|---|")
    for name, _ in rows:
        print(f"| {name} | {times[name]:.3f} | {times[name] / anchor:.2f} |")


if __name__ == "__main__":
    main()
