"""One ask/tell face over several optimisation back-ends, with JSON state for restarts.

``make_optimizer(space, backend=..., seed=0, **options)`` returns an :class:`Optimizer`:

- ``ask(n, pending)`` proposes ``n`` new points while ``pending`` points are still being evaluated;
- ``tell(points, values, noise_var=None, feasible=True)`` records results (the objective is
  *maximised*); a physically infeasible design is told with ``feasible=False`` and may have no
  value (``None``): it is learnt as infeasible, never as a measured objective of 0. A single
  point may be told without the lists: ``tell(point, value, noise_var, feasible)``;
- ``tell_failed(points, reasons)`` records evaluations that failed: they are neither observations
  nor proposed again (no new point within ``failure_radius`` of one, in unit-cube distance);
- ``best()`` (feasible observations only), ``n_observations`` (feasible and infeasible),
  ``state_dict()`` (JSON-safe) and ``from_state(space, state)``.

No back-end proposes a point within ``duplicate_radius`` (unit-cube distance, default
1e-3·sqrt(dim)) of an evaluated (feasible or infeasible) or pending point, or of another point
of the same batch.

Each proposal is a pure function of (seed, options, history, pending, counters), so a controller
restarted from ``state_dict()`` proposes exactly what it would have proposed without the restart.
The back-ends are imported lazily: ``import bayes.optimizer`` does not import torch.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.space import Space

STATE_FORMAT = 1

#: backend name -> "module:Class", imported on first use.
BACKENDS: dict[str, str] = {
    "botorch": "bayes.botorch_backend:BoTorchOptimizer",
    "botorch_pareto": "bayes.multiobjective:ParetoOptimizer",
    "botorch_transfer": "bayes.transfer:TransferOptimizer",
    "dragonfly": "bayes.dragonfly_backend:DragonflyOptimizer",
    "multi_fidelity": "bayes.multi_fidelity:MultiFidelityOptimizer",
    "sobol": "bayes.optimizer:SobolOptimizer",
    "random": "bayes.optimizer:RandomOptimizer",
}


@dataclass
class Observation:
    point: dict[str, float]
    unit: np.ndarray
    #: None only for an infeasible design (nothing was measured); a list (objectives, then
    #: constrained outcomes) for the multi-objective back-end.
    value: float | list[float] | None
    noise_var: float | None
    #: False: the design is physically infeasible; its value (if any) is not an objective.
    feasible: bool = True


@dataclass
class Failure:
    point: dict[str, float]
    unit: np.ndarray
    reason: str


class Optimizer:
    """Shared bookkeeping: validation, history, exclusion of failed/pending points, JSON state.

    A back-end implements ``_propose(n, pending_unit) -> (n, d) unit-cube array`` and may add
    options (``OPTIONS``: name -> default) and counters (``_extra_state``/``_load_extra_state``).
    """

    backend: ClassVar[str] = ""
    COMMON_OPTIONS: ClassVar[dict[str, Any]] = {
        # Unit-cube distance around a failed point inside which nothing is proposed again.
        "failure_radius": 0.05,
        # Unit-cube distance below which a proposal counts as a duplicate of an evaluated or
        # pending point (or of another point of its batch); None: 1e-3 * sqrt(dim).
        "duplicate_radius": None,
    }
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        if not isinstance(space, Space):
            raise ValueError(f"space must be a bayes.space.Space; got {type(space).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        accepted = {**self.COMMON_OPTIONS, **self.OPTIONS}
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for backend {self.backend!r}; accepted: {sorted(accepted)}"
            )
        self.space = space
        self.seed = int(seed)
        self.options: dict[str, Any] = {**accepted, **options}
        if self.options["duplicate_radius"] is None:
            self.options["duplicate_radius"] = 1e-3 * math.sqrt(space.dim)
        for name in ("failure_radius", "duplicate_radius"):
            value = float(self.options[name])
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0; got {self.options[name]!r}")
            self.options[name] = value
        self.observations: list[Observation] = []
        self.failures: list[Failure] = []
        self.n_asks = 0

    # ------------------------------------------------------------------ public face
    @property
    def n_observations(self) -> int:
        return len(self.observations)

    def ask(self, n: int = 1, pending: Sequence[Mapping[str, float]] | None = None) -> list[dict]:
        """``n`` new points to evaluate, away from ``pending`` (still running) and failed points."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        pending_unit = self._validated_units(list(pending or []), "pending")
        unit = np.asarray(self._propose(int(n), pending_unit), dtype=float).reshape(n, self.space.dim)
        self.n_asks += 1
        points = self.space.from_unit_many(unit)
        for point in points:
            self.space.validate(point)
        return points

    def tell(
        self,
        points: Sequence[Mapping[str, float]] | Mapping[str, float],
        values: Sequence[float | None] | float | None,
        noise_var: Sequence[float | None] | float | None = None,
        feasible: Sequence[bool] | bool = True,
    ) -> None:
        """Record finished evaluations (higher is better); ``noise_var`` is each value's variance.

        ``feasible=False`` marks a physically infeasible design (e.g. the cell cannot deliver the
        power): the model-based back-ends learn where such designs are instead of being told a
        made-up objective. Its value may be ``None``; a feasible one must be a finite number.
        ``tell(point, value, noise_var, feasible)`` with one point (a mapping) works too.
        """
        if isinstance(points, Mapping):
            points = [points]
            values = [values]
            noise_var = None if noise_var is None else [noise_var]
            if not isinstance(feasible, bool | np.bool_):
                raise ValueError(f"feasible must be a bool for a single point; got {feasible!r}")
        points = list(points)
        if values is None or isinstance(values, int | float | np.number):
            raise ValueError(
                "values must be a list (one per point); tell(point, value) takes one point as a "
                f"mapping; got values={values!r}"
            )
        values = list(values)
        if len(points) != len(values):
            raise ValueError(f"tell got {len(points)} points but {len(values)} values")
        if noise_var is None:
            noise = [None] * len(points)
        else:
            noise = list(noise_var)
            if len(noise) != len(points):
                raise ValueError(f"tell got {len(points)} points but {len(noise)} noise_var values")
        if isinstance(feasible, bool | np.bool_):
            flags = [bool(feasible)] * len(points)
        else:
            flags = list(feasible)
            if len(flags) != len(points):
                raise ValueError(f"tell got {len(points)} points but {len(flags)} feasible flags")
        checked = []
        for i, (point, value, var, flag) in enumerate(zip(points, values, noise, flags, strict=True)):
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(f"feasible[{i}] must be True or False; got {flag!r}")
            flag = bool(flag)
            if value is None:
                if flag:
                    raise ValueError(
                        f"values[{i}] is None for a feasible design: only an infeasible one "
                        "(feasible=False) may have no value; tell a failed evaluation with "
                        "tell_failed"
                    )
            else:
                value = self._check_value(value, f"values[{i}]")
            if var is not None:
                var = _finite(var, f"noise_var[{i}]")
                if var < 0.0:
                    raise ValueError(f"noise_var[{i}] must be >= 0; got {var}")
            unit = self.space.to_unit(point)
            checked.append(Observation(self._full(point), unit, value, var, flag))
        self.observations.extend(checked)

    def tell_failed(
        self, points: Sequence[Mapping[str, float]], reasons: Sequence[str] | None = None
    ) -> None:
        """Record failed evaluations: not used as observations and never proposed again."""
        points = list(points)
        reasons = ["failed"] * len(points) if reasons is None else [str(r) for r in reasons]
        if len(reasons) != len(points):
            raise ValueError(f"tell_failed got {len(points)} points but {len(reasons)} reasons")
        checked = [
            Failure(self._full(p), self.space.to_unit(p), r)
            for p, r in zip(points, reasons, strict=True)
        ]
        self.failures.extend(checked)

    def best(self) -> tuple[dict[str, float], float]:
        """The best feasible observed point and its value (the first one on ties)."""
        feasible = self.feasible_observations
        if not feasible:
            raise ValueError(
                "best() needs at least one observation of a feasible design; "
                f"{len(self.observations)} told, none feasible"
            )
        top = max(feasible, key=lambda o: o.value)
        return dict(top.point), top.value

    @property
    def feasible_observations(self) -> list[Observation]:
        """Observations of feasible designs: the ones with an objective value."""
        return [o for o in self.observations if o.feasible]

    @property
    def n_infeasible(self) -> int:
        return sum(not o.feasible for o in self.observations)

    def state_dict(self) -> dict:
        """JSON-safe state; ``optimizer_from_state(space, state)`` continues identically."""
        return {
            "format": STATE_FORMAT,
            "backend": self.backend,
            "seed": self.seed,
            "options": _json_safe(self._options_for_state()),
            "space": self.space.to_dict(),
            "observations": [
                {"point": o.point, "value": o.value, "noise_var": o.noise_var,
                 "feasible": o.feasible}
                for o in self.observations
            ],
            "failures": [{"point": f.point, "reason": f.reason} for f in self.failures],
            "counters": {"n_asks": self.n_asks, **self._extra_state()},
        }

    @classmethod
    def from_state(cls, space: Space, state: Mapping) -> Optimizer:
        """Rebuild an optimiser from ``state_dict()`` output (after a JSON round-trip too)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {state.get('format')!r} is not {STATE_FORMAT}")
        backend = state.get("backend")
        target = get_backend_class(backend)
        if cls is not Optimizer and not issubclass(target, cls):
            raise ValueError(f"state is for backend {backend!r}, not {cls.backend!r}")
        # The saved space is informative only: a changed space (e.g. widened bounds) is accepted
        # as long as every recorded point still validates in it.
        optimizer = target(space, seed=int(state["seed"]), **dict(state.get("options", {})))
        observations = state.get("observations", [])
        if observations:
            optimizer.tell(
                [o["point"] for o in observations],
                [o["value"] for o in observations],
                [o.get("noise_var") for o in observations],
                # states written before feasibility existed hold feasible designs only
                [bool(o.get("feasible", True)) for o in observations],
            )
        failures = state.get("failures", [])
        if failures:
            optimizer.tell_failed([f["point"] for f in failures], [f["reason"] for f in failures])
        counters = dict(state.get("counters", {}))
        optimizer.n_asks = int(counters.pop("n_asks", 0))
        optimizer._load_extra_state(counters)
        return optimizer

    # ------------------------------------------------------------------ for back-ends
    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_value(self, value: object, what: str) -> Any:
        """One told value as the back-end stores it: a finite float (a multi-objective
        back-end takes a vector)."""
        return _finite(value, what, hint=" (tell a failed evaluation with tell_failed)")

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, counters: Mapping) -> None:
        return None

    def _options_for_state(self) -> dict:
        return dict(self.options)

    def _step_seed(self, tag: int = 0) -> int:
        """Seed of this proposal: depends on the seed, the history size and the ask counter."""
        return quasirandom.derived_seed(
            self.seed, tag, len(self.observations), len(self.failures), self.n_asks
        )

    def _observed_unit(self) -> np.ndarray:
        if not self.observations:
            return np.zeros((0, self.space.dim))
        return np.stack([o.unit for o in self.observations])

    def _failed_unit(self) -> np.ndarray:
        if not self.failures:
            return np.zeros((0, self.space.dim))
        return np.stack([f.unit for f in self.failures])

    def _evaluated_unit(self) -> np.ndarray:
        """Every point whose result is known: observations (feasible or not)."""
        return self._observed_unit()

    def _avoid(self, pending_unit: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Regions no proposal may enter: near evaluated and pending points (duplicates) and
        near failed points."""
        return [
            (np.concatenate([self._evaluated_unit(), pending_unit]), self.options["duplicate_radius"]),
            (self._failed_unit(), self.options["failure_radius"]),
        ]

    def _validated_units(self, points: list, what: str) -> np.ndarray:
        units = []
        for i, point in enumerate(points):
            try:
                units.append(self.space.to_unit(point))
            except ValueError as error:
                raise ValueError(f"{what}[{i}]: {error}") from None
        return np.stack(units) if units else np.zeros((0, self.space.dim))

    def _full(self, point: Mapping[str, float]) -> dict[str, float]:
        merged = {**self.space.fixed, **{k: float(v) for k, v in point.items()}}
        return {name: merged[name] for name in self.space.names if name in merged}


class _StreamOptimizer(Optimizer):
    """Points taken in order from a seeded stream, skipping infeasible and excluded ones."""

    kind: ClassVar[str] = ""

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.position = 0

    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        unit, self.position = quasirandom.draw_stream(
            self.space, self.kind, self.seed, self.position, n, self._avoid(pending_unit),
            separation=self.options["duplicate_radius"],
        )
        return unit

    def _extra_state(self) -> dict:
        return {"position": self.position}

    def _load_extra_state(self, counters: Mapping) -> None:
        self.position = int(counters.get("position", 0))


class SobolOptimizer(_StreamOptimizer):
    """A scrambled Sobol sequence: the space-filling baseline."""

    backend = "sobol"
    kind = "sobol"


class RandomOptimizer(_StreamOptimizer):
    """Independent uniform points: the random-search baseline."""

    backend = "random"
    kind = "random"


def get_backend_class(backend: object) -> type[Optimizer]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {sorted(BACKENDS)}")
    module_name, class_name = BACKENDS[str(backend)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_optimizer(space: Space, backend: str = "botorch", seed: int = 0, **options: Any) -> Optimizer:
    """An ask/tell optimiser over ``space`` (see the module docstring for the protocol)."""
    return get_backend_class(backend)(space, seed=seed, **options)


def validate_options(space: Space, backend: str = "botorch", seed: int = 0,
                     **options: Any) -> None:
    """Check a back-end's options by building it once, dry (nothing is asked or fitted).

    Why: the back-ends check their options' values in their constructors; a campaign built the
    same way at load refuses a bad value before any folder or job exists, instead of a traceback
    when the controller first builds its optimiser. ValueError naming the back-end and option."""
    cls = get_backend_class(backend)
    try:
        cls(space, seed=seed, **options)
    except (TypeError, ValueError) as error:  # float([1]) is a TypeError: same named refusal
        raise ValueError(f"backend {backend!r}: {error} (options given: "
                         f"{ {k: options[k] for k in sorted(options)} })") from None


def optimizer_from_state(space: Space, state: Mapping) -> Optimizer:
    """Rebuild the optimiser that wrote ``state`` (``Optimizer.state_dict()``)."""
    return Optimizer.from_state(space, state)


def check_integer_options(options: dict[str, Any], minimums: Sequence[tuple[str, int]]) -> None:
    """Each named option must be an integer (not a bool) >= its minimum; stored as int."""
    for name, minimum in minimums:
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"option {name} must be an integer >= {minimum}; got {value!r}")
        options[name] = int(value)


def _finite(value: object, what: str, hint: str = "") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}: values must be finite{hint}")
    return number


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
