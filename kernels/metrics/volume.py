"""The four microstructure metrics of a labelled cathode volume (0 pore, 1 AM, 2 CBD).

* volume fraction of each phase;
* specific surface areas (area per total volume, 1/um) of the AM–pore and AM–CBD interfaces and
  the CBD coverage of the AM surface (smoothed marching-cubes surface, see kernels.metrics.surface_area);
* tortuosity factor of the pore phase along `axis`: tau = porosity / (D_eff / D_bulk), where the
  porosity is the total pore fraction (the number the cell model receives as epsilon, so that
  epsilon / tau recovers D_eff exactly) and D_eff comes from the spanning pore cluster only.
  A pore phase that does not connect the two faces gives tau = inf and percolating = False;
* effective electronic conductivity (S/m) of AM + CBD along `axis`, each phase with its own
  conductivity, pores insulating; 0.0 and solid_percolating = False when the solid does not
  connect the two faces.

With `cbd_domain` (a kernels.cell.cbd_model.NanoporousCBD: the CBD label is a nanoporous domain,
CellModelOptions.cbd_volume = "nanoporous_domain") the CBD also carries ions through the
electrolyte in its nanopores: in the ionic solve a CBD voxel conducts
`cbd_domain.ionic_relative_diffusivity` (a pore voxel 1, AM 0); the electrolyte fraction is
eps_e = pore + nanoporosity x cbd (`electrolyte_volume_fraction`, what the DFN gets as its
porosity) and tau = eps_e / (D_eff / D_bulk), so eps_e / tau is still D_eff exactly. Without it
(the default) the CBD blocks ions and tau is relative to the pore fraction, as above.

Transport goes through `kernels.metrics.solvers.solve` (back-end by name); solves use one thread per
process unless MICROLOOP_TORCH_THREADS says otherwise. Every transport number here comes from a
converged solve: `solve()` retries an unacceptable back-end result with the native solver and
otherwise raises `kernels.metrics.solvers.SolverNotConverged`, which propagates from here.

Default conductivities (change them per campaign in the config):
* AM 0.18 S/m: the positive-electrode conductivity of PyBaMM's Chen2020 parameter set (LG M50,
  NMC811; Chen et al., J. Electrochem. Soc. 167, 080534, 2020), inside the 0.1–1 S/m range usually
  quoted for lithiated NMC.
* CBD 10 S/m: the low end of the 10–100 S/m usually assumed for a porous carbon-black/PVDF domain
  (bulk carbon black is far higher; the binder and the domain's own porosity bring it down).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Intrinsic lithiated-NMC811 and nanoporous carbon-binder conductivities: the cell model's
# defaults, defined with their sources next to the CBD model (kernels.cell.cbd_model).
from kernels.cell.cbd_model import (  # noqa: E402
    DEFAULT_CONDUCTIVITY_AM_S_M,
    DEFAULT_CONDUCTIVITY_CBD_S_M,
    NanoporousCBD,
)
from kernels.metrics.particle_size import WATERSHED_STRIDES, am_particle_radius_um
from kernels.metrics.solvers import solve
from kernels.metrics.surface_area import interface_areas_voxels
from kernels.structure.procedural import AM, CBD, PORE

PHASE_NAMES = {PORE: "pore", AM: "am", CBD: "cbd"}


@dataclass
class VolumeMetrics:
    """Metrics of one volume; `to_dict` is the JSON form every other layer consumes."""

    volume_fraction: dict[str, float]
    specific_surface_area_per_um: dict[str, float]
    cbd_coverage: float
    tortuosity_factor: float
    effective_conductivity_S_m: float
    percolating: bool  # the pore phase connects the two faces of `axis`
    solid_percolating: bool  # AM + CBD connects them (electronic path)
    # 3V/S radius of the AM particles (kernels.metrics.particle_size): the DFN's particle radius
    am_particle_radius_um: float | None = None
    # only with the CBD as a nanoporous domain (None otherwise): pores + nanopores, and the
    # domain's nanoporosity; tortuosity_factor is then relative to electrolyte_volume_fraction
    electrolyte_volume_fraction: float | None = None
    cbd_nanoporosity: float | None = None

    def to_dict(self) -> dict:
        """JSON-safe: an infinite tortuosity factor becomes None; the nanoporous-domain keys only
        when the CBD was characterised as one."""
        tau = self.tortuosity_factor
        out = {
            "volume_fraction": {k: float(v) for k, v in self.volume_fraction.items()},
            "specific_surface_area_per_um": {
                k: float(v) for k, v in self.specific_surface_area_per_um.items()
            },
            "cbd_coverage": float(self.cbd_coverage),
            "tortuosity_factor": float(tau) if math.isfinite(tau) else None,
            "effective_conductivity_S_m": float(self.effective_conductivity_S_m),
            "percolating": bool(self.percolating),
            "solid_percolating": bool(self.solid_percolating),
            "am_particle_radius_um": (None if self.am_particle_radius_um is None
                                      else float(self.am_particle_radius_um)),
        }
        if self.electrolyte_volume_fraction is not None:
            out["electrolyte_volume_fraction"] = float(self.electrolyte_volume_fraction)
            out["cbd_nanoporosity"] = float(self.cbd_nanoporosity or 0.0)
        return out


def validate_labels(volume: np.ndarray) -> None:
    """ValueError unless `volume` is a 3D integer array with labels in {0 pore, 1 AM, 2 CBD}."""
    if not isinstance(volume, np.ndarray):
        raise ValueError(f"volume must be a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (a 3D array of labels), got shape {volume.shape}")
    if volume.dtype == np.bool_ or not np.issubdtype(volume.dtype, np.integer):
        raise ValueError(
            f"volume must hold integer labels (uint8 preferred), got dtype {volume.dtype}"
        )
    if min(volume.shape) < 2:
        raise ValueError(f"volume must be at least 2 voxels along every axis, got {volume.shape}")
    present = np.unique(volume)
    bad = present[~np.isin(present, list(PHASE_NAMES))]
    if bad.size:
        raise ValueError(
            f"volume labels must be 0 (pore), 1 (AM) or 2 (CBD); found {bad.tolist()[:10]}"
        )


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    return axis


def volume_fractions(volume: np.ndarray) -> dict[str, float]:
    """Fraction of voxels in each phase, {"pore", "am", "cbd"}."""
    counts = np.bincount(volume.ravel(), minlength=3)[:3]
    return {PHASE_NAMES[label]: float(counts[label] / volume.size) for label in PHASE_NAMES}


def specific_surface_areas(volume: np.ndarray, voxel_um: float) -> tuple[dict[str, float], float]:
    """({"am_pore", "am_cbd"} interface area per total volume in 1/um, CBD coverage of AM)."""
    areas = interface_areas_voxels(volume, solid_label=AM, other_labels=(PORE, CBD))
    per_um = 1.0 / (volume.size * voxel_um)  # (voxel^2 * um^2) / (voxels * um^3)
    ssa = {"am_pore": areas[PORE] * per_um, "am_cbd": areas[CBD] * per_um}
    total = areas[PORE] + areas[CBD]
    coverage = areas[CBD] / total if total > 0 else 0.0
    return ssa, coverage


def tortuosity_factor(
    volume: np.ndarray,
    axis: int = 0,
    backend: str = "native",
    rel_tol: float = 1e-3,
    device: str = "cpu",
    cbd_domain: NanoporousCBD | None = None,
) -> tuple[float, bool]:
    """(pore tortuosity factor along `axis`, pore percolates); (inf, False) without a path.

    cbd_domain: the CBD is that nanoporous domain and carries ions too; tau is then relative
    to the electrolyte fraction (`electrolyte_volume_fraction`), see the module docstring.
    """
    field = (volume == PORE).astype(np.float32)
    porosity = float(field.mean())
    if cbd_domain is not None:
        porosity = electrolyte_volume_fraction(volume, cbd_domain)
        field[volume == CBD] = cbd_domain.ionic_relative_diffusivity
    if not field.any():
        return math.inf, False
    result = solve(field, axis=_check_axis(axis), backend=backend, rel_tol=rel_tol, device=device)
    if not result.percolating:
        return math.inf, False
    # relative to the field's largest value (1 in a pore; the domain's when there is no pore)
    relative_diffusivity = result.relative_conductance * float(field.max())
    return porosity / relative_diffusivity, True


def electrolyte_volume_fraction(volume: np.ndarray, cbd_domain: NanoporousCBD) -> float:
    """Electrolyte per electrode volume when the CBD label is `cbd_domain`: pores + nanopores."""
    fractions = volume_fractions(volume)
    return fractions["pore"] + cbd_domain.nanoporosity * fractions["cbd"]


def effective_conductivity_S_m(
    volume: np.ndarray,
    axis: int = 0,
    conductivity_am_S_m: float = DEFAULT_CONDUCTIVITY_AM_S_M,
    conductivity_cbd_S_m: float = DEFAULT_CONDUCTIVITY_CBD_S_M,
    backend: str = "native",
    rel_tol: float = 1e-3,
    device: str = "cpu",
) -> float:
    """Effective electronic conductivity (S/m) of the solid (AM + CBD) along `axis`."""
    sigma, _ = _electronic(volume, axis, conductivity_am_S_m, conductivity_cbd_S_m, backend,
                           rel_tol, device)
    return sigma


def _electronic(volume: np.ndarray, axis: int, conductivity_am_S_m: float,
                conductivity_cbd_S_m: float, backend: str, rel_tol: float,
                device: str) -> tuple[float, bool]:
    """(effective electronic conductivity in S/m, the solid percolates along `axis`)."""
    for name, value in (("conductivity_am_S_m", conductivity_am_S_m),
                        ("conductivity_cbd_S_m", conductivity_cbd_S_m)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of S/m, got {value!r}")
    field = np.zeros(volume.shape, dtype=np.float32)
    field[volume == AM] = conductivity_am_S_m
    field[volume == CBD] = conductivity_cbd_S_m
    if not field.any():
        return 0.0, False
    result = solve(field, axis=_check_axis(axis), backend=backend, rel_tol=rel_tol, device=device)
    return float(result.relative_conductance * field.max()), result.percolating


#: what `characterise_volume` reports to `on_stage`, in order
STAGES = ("surface areas", "tortuosity factor", "electronic conductivity")


def characterise_volume(
    volume: np.ndarray,
    voxel_um: float,
    axis: int = 0,
    backend: str = "native",
    conductivity_am_S_m: float = DEFAULT_CONDUCTIVITY_AM_S_M,
    conductivity_cbd_S_m: float = DEFAULT_CONDUCTIVITY_CBD_S_M,
    rel_tol: float = 1e-3,
    device: str = "cpu",
    cbd_domain: NanoporousCBD | None = None,
    on_stage: Callable[[str], None] | None = None,
    watershed_stride: int = 1,
) -> VolumeMetrics:
    """All four metrics of one labelled volume (0 pore, 1 AM, 2 CBD) with voxels of `voxel_um`.

    device: where the transport solves run ('cpu', or 'cuda:N' on a GPU node).
    cbd_domain: the CBD label is this nanoporous domain (ions pass through its nanopores; the
    electronic solve still uses conductivity_cbd_S_m, whose default is the default domain's);
    None (default): solid CBD that blocks ions.
    on_stage: called with each of STAGES once it is done (progress on a large volume, whose
    stages take minutes each).
    watershed_stride: the particle split of the AM radius on voxels (1, the default) or on
    2×2×2 blocks (2: ≈ 2.5× cheaper; radii -0.8 to +2.7 % off at 0.4 um voxels, -7 to -14 %
    at 1 um; kernels.metrics.particle_size).
    """
    done = on_stage or (lambda _stage: None)
    validate_labels(volume)
    if not (isinstance(voxel_um, numbers.Real) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    _check_axis(axis)
    if (isinstance(watershed_stride, bool) or not isinstance(watershed_stride, int)
            or watershed_stride not in WATERSHED_STRIDES):  # before the solves, not after
        raise ValueError(f"watershed_stride: accepted values are {WATERSHED_STRIDES}, "
                         f"got {watershed_stride!r}")
    ssa, coverage = specific_surface_areas(volume, voxel_um)
    done(STAGES[0])
    tau, percolating = tortuosity_factor(volume, axis, backend, rel_tol, device, cbd_domain)
    done(STAGES[1])
    sigma, solid_percolating = _electronic(
        volume, axis, conductivity_am_S_m, conductivity_cbd_S_m, backend, rel_tol, device
    )
    done(STAGES[2])
    radius_um = am_particle_radius_um(volume, voxel_um, ssa["am_pore"] + ssa["am_cbd"],
                                      watershed_stride=watershed_stride)
    return VolumeMetrics(
        volume_fraction=volume_fractions(volume),
        specific_surface_area_per_um=ssa,
        cbd_coverage=coverage,
        tortuosity_factor=tau,
        effective_conductivity_S_m=sigma,
        percolating=percolating,
        solid_percolating=solid_percolating,
        am_particle_radius_um=radius_um,
        electrolyte_volume_fraction=(None if cbd_domain is None
                                     else electrolyte_volume_fraction(volume, cbd_domain)),
        cbd_nanoporosity=None if cbd_domain is None else cbd_domain.nanoporosity,
    )
