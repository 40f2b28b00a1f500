"""Design params -> stored voxel samples (procedural simulator or a trained generator).

Idempotent: only samples whose done marker is unset are (re)generated. Each sample's seed is
derived from (campaign seed, trial id, sample index), so a regenerated sample equals the lost one
and the same campaign gives the same voxels whichever job or node writes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from jobs.contract.spec import DEFAULT_MODEL, EvaluationSpec, read_job_inputs, validate_params
from jobs.store import DesignStore

MAX_CHUNK_VOXELS = 128


def sample_seed(seed: int, trial_id: int, index: int) -> int:
    """A 32-bit seed for one sample, independent across (seed, trial, index)."""
    state = np.random.SeedSequence([int(seed), int(trial_id), int(index)]).generate_state(1)
    return int(state[0])


def default_device() -> str:
    """The GPU when torch sees one (generation is the GPU-friendly stage), else the CPU."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_generator(spec: EvaluationSpec, device: str = "cpu") -> Any:
    """The trained generator the spec names ("default" or a model file), or None for the
    procedural simulator. Its voxel size must be the spec's: the metrics are per micrometre."""
    if spec.generator.is_procedural:
        return None
    try:
        generator = importlib.import_module("kernels.generator.model")
    except ImportError as error:
        raise RuntimeError(f"generator.kind={spec.generator.kind!r} needs kernels.generator.model, "
                           f"which could not be imported ({error}); use 'procedural'") from error
    if spec.generator.kind == DEFAULT_MODEL:
        # the shipped model that learnt the spec's calendering (a campaign frozen with the
        # flattened particles' model resumes on it); None: the default file
        model = generator.load_default_model(spec.generator.calendering)
    else:
        model_path = Path(spec.generator.kind)
        if not model_path.is_file():
            raise ValueError(f"generator.kind must be 'procedural', 'default' or an existing "
                             f"model file, got {spec.generator.kind!r} (no such file)")
        model = generator.load_state_bytes(model_path.read_bytes())
    model_voxel_um = float(model.config.voxel_um)
    if not math.isclose(model_voxel_um, spec.fidelity.voxel_um, rel_tol=1e-6):
        raise ValueError(f"fidelity.voxel_um must be the generator's voxel size "
                         f"{model_voxel_um} um for generator.kind={spec.generator.kind!r}, "
                         f"got {spec.fidelity.voxel_um}")
    trained = generator.trained_calendering(model)
    if spec.generator.calendering is not None and spec.generator.calendering != trained:
        raise ValueError(f"generator.calendering must be the one generator.kind="
                         f"{spec.generator.kind!r} was trained on ({trained!r}; a trained "
                         f"generator samples the structures it learnt), or omitted; got "
                         f"{spec.generator.calendering!r}")
    return model.to(device)


def make_volume(params: dict[str, float], spec: EvaluationSpec, seed: int,
                device: str = "cpu", model: Any = None, index: int = 0) -> np.ndarray:
    """One uint8 cube (0 pore / 1 AM / 2 CBD) of `spec.fidelity.cube_voxels`^3 for `params`:
    from `model` (see `load_generator`) when given, else the procedural simulator, which places
    the CBD as a nanoporous domain when `spec.cell.model_options` says cbd_volume so. Cube
    `index` of a design comes from ensemble member `index` mod K, so the per-cube objective
    spread (`objective.noise_from_samples`) includes the members' disagreement; with that
    option a design outside the model's training box also draws each cube's conditions around
    the design (`kernels.generator.model.jittered_params`), so its extrapolation shows as
    cube-to-cube spread and reaches the optimiser as noise."""
    size = spec.fidelity.cube_voxels
    from kernels.cell.options import cell_model_options

    cbd_domain = cell_model_options(spec.cell.model_options).cbd_domain()
    if model is None:
        from kernels.structure.procedural import (
            RHO_CBD_G_CM3,
            ManufacturingParams,
            generate_structure,
        )

        manufacturing = ManufacturingParams(
            am_wt_frac=params["am_wt_frac"],
            porosity=params["porosity"],
            binder_adhesion=params.get("binder_adhesion", ManufacturingParams.binder_adhesion),
            mean_diameter_um=spec.generator.mean_diameter_um,
            diameter_spread=spec.generator.diameter_spread,
        )
        manufacturing.validate()
        # the CBD as a nanoporous domain ([cell] model_options cbd_volume): place its volume
        density = RHO_CBD_G_CM3 if cbd_domain is None else cbd_domain.domain_density_g_cm3
        volume = generate_structure(manufacturing, size, spec.fidelity.voxel_um, seed,
                                    cbd_density_g_cm3=density,
                                    calendering=spec.generator.procedural_calendering)
    elif cbd_domain is not None:
        raise ValueError("cell.model_options.cbd_volume = 'nanoporous_domain' needs "
                         "generator.kind = 'procedural' (a trained generator places the solid "
                         f"CBD it was trained on), got generator.kind = {spec.generator.kind!r}")
    else:
        from kernels.generator.model import sample

        members = getattr(model, "members", None)
        member = None if members is None else int(index) % len(members)
        volume = sample(params, n=1, size=size, seed=seed, device=device, model=model,
                        member=member,
                        extrapolation_jitter=bool(spec.objective.noise_from_samples))[0]
    volume = np.ascontiguousarray(volume, dtype=np.uint8)
    if volume.shape != (size, size, size):
        raise ValueError(f"generator returned shape {volume.shape}, expected {(size,) * 3}")
    return volume


def design_attributes(trial_id: int, params: dict[str, float],
                      spec: EvaluationSpec) -> dict[str, Any]:
    """What the design group records about itself, once, when it is created."""
    from jobs.provenance import package_version

    microloop_version = package_version() or "unknown"
    return {
        "trial_id": int(trial_id),
        "params": dict(params),
        "spec": spec.to_dict(),
        "provenance": {
            "generator": spec.generator.kind,
            "seed": spec.seed,
            "sample_seeds": "numpy SeedSequence([seed, trial_id, index])",
            "microloop_version": microloop_version,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "labels": {"0": "pore", "1": "am", "2": "cbd", "255": "never written"},
        },
    }


def open_design_store(campaign_dir: str | Path, trial_id: int, params: dict[str, float],
                      spec: EvaluationSpec) -> DesignStore:
    """Create the design's group (first time) or open it (later); same layout either way."""
    size = spec.fidelity.cube_voxels
    return DesignStore.create(
        campaign_dir, trial_id, n_samples=spec.fidelity.n_cubes, size_voxels=size,
        attributes=design_attributes(trial_id, params, spec), chunk_voxels=chunk_voxels(size),
        voxel_um=spec.fidelity.voxel_um)


def chunk_voxels(size_voxels: int, max_voxels: int = MAX_CHUNK_VOXELS) -> int:
    """Chunk edge for cubes of `size_voxels`: the whole cube up to `max_voxels`, else the
    largest divisor not above it (>= 32), so a 256^3 cube is 8 chunks of 128^3 (2 MiB each)."""
    if size_voxels <= max_voxels:
        return size_voxels
    for edge in range(max_voxels, 31, -1):
        if size_voxels % edge == 0:
            return edge
    return size_voxels


def generate_samples(campaign_dir: str | Path, trial_id: int, params: dict[str, float],
                     spec: EvaluationSpec | dict, device: str | None = None) -> list[int]:
    """Write every sample of the design that is not done yet; returns the indices written.

    Done samples that fail verification (a lost or damaged chunk) are regenerated too.
    """
    spec = EvaluationSpec.from_dict(spec)
    params = validate_params(params)
    if device is None:   # torch only matters (and is only imported) for a trained generator
        device = "cpu" if spec.generator.is_procedural else default_device()
    store = open_design_store(campaign_dir, trial_id, params, spec)
    store.remove_partials()
    store.repair()
    todo = [index for index in range(store.n_samples) if not store.is_done(index)]
    model = load_generator(spec, device) if todo else None
    written = []
    for index in todo:
        volume = make_volume(params, spec, sample_seed(spec.seed, trial_id, index), device, model,
                             index=index)
        store.write_sample(index, volume)
        written.append(index)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.generate",
        description="Generate the missing voxel samples of one design into the campaign store.")
    parser.add_argument("campaign_dir")
    parser.add_argument("trial_id", type=int)
    parser.add_argument("--spec", required=True, help="EvaluationSpec JSON file")
    parser.add_argument("--params", required=True, help="design params JSON file")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    args = parser.parse_args(argv)
    try:    # bad input files: a one-line error and exit 2, before any work
        spec, params = read_job_inputs(args.spec, args.params)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    written = generate_samples(args.campaign_dir, args.trial_id, params, spec, args.device)
    print(json.dumps({"trial_id": args.trial_id, "written": written}))


if __name__ == "__main__":
    main()
