"""Search spaces: named continuous parameters, their unit-cube coordinates and linear constraints.

Every optimiser back-end works in the unit cube ``[0, 1]^d`` of the *free* parameters (those not
fixed). ``Space`` owns the map between that cube and the user's named values, so back-ends never
see units, log scales or fixed values, and every point told to an optimiser is checked here first.

Linear inequality constraints are written in the user's (physical) values, e.g.
``({"a": 1.0, "b": 1.0}, "<=", 1.2)`` means ``a + b <= 1.2``. On linear-scale parameters they stay
linear in the unit cube (``unit_constraints``), which is what BoTorch's optimiser needs; a
constraint on a log-scale parameter would not, so it is rejected with a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ACCEPTED_OPERATORS = ("<=", ">=")
#: Constraint slack allowed when validating a point, relative to the constraint's scale.
CONSTRAINT_RTOL = 1e-7


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[name] * value[name]) <op> rhs`` in the user's values."""

    coefficients: dict[str, float]
    operator: str
    rhs: float

    def slack(self, point: Mapping[str, float]) -> float:
        """Positive or zero when satisfied; negative by how much it is violated."""
        lhs = sum(c * float(point[name]) for name, c in self.coefficients.items())
        return self.rhs - lhs if self.operator == "<=" else lhs - self.rhs

    def scale(self, point: Mapping[str, float]) -> float:
        """A magnitude to make the tolerance relative."""
        terms = [abs(c * float(point[name])) for name, c in self.coefficients.items()]
        return max([1.0, abs(self.rhs), *terms])

    def describe(self) -> str:
        terms = " + ".join(f"{c:g}*{name}" for name, c in self.coefficients.items())
        return f"{terms} {self.operator} {self.rhs:g}"

    def to_list(self) -> list:
        return [dict(self.coefficients), self.operator, self.rhs]


def _as_constraint(raw: object, index: int) -> LinearConstraint:
    if isinstance(raw, LinearConstraint):
        return raw
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) != 3:
        raise ValueError(
            f"constraints[{index}] must be (coefficients: dict, operator, rhs), "
            f'e.g. ({{"a": 1.0, "b": 1.0}}, "<=", 1.2); got {raw!r}'
        )
    coefficients, operator, rhs = raw
    if not isinstance(coefficients, Mapping) or not coefficients:
        raise ValueError(f"constraints[{index}]: coefficients must be a non-empty dict name -> float")
    if operator not in ACCEPTED_OPERATORS:
        raise ValueError(
            f"constraints[{index}]: operator {operator!r} is not accepted; use one of "
            f"{list(ACCEPTED_OPERATORS)}"
        )
    coefficients = {str(k): float(v) for k, v in coefficients.items()}
    rhs = float(rhs)
    if not all(math.isfinite(v) for v in [*coefficients.values(), rhs]):
        raise ValueError(f"constraints[{index}]: coefficients and rhs must be finite numbers")
    return LinearConstraint(coefficients, operator, rhs)


class Space:
    """Named continuous parameters with bounds, units, log scales, fixed values and constraints.

    ``bounds`` fixes the order of the parameters. A fixed parameter may be listed in ``bounds``
    (its value must lie inside them) or only in ``fixed``; it is never optimised but always
    present in the points an optimiser returns.
    """

    def __init__(
        self,
        bounds: Mapping[str, tuple[float, float]],
        constraints: Iterable[object] = (),
        log_scale: Iterable[str] | Mapping[str, bool] = (),
        fixed: Mapping[str, float] | None = None,
        units: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(bounds, Mapping) or not bounds:
            raise ValueError("bounds must be a non-empty dict name -> (lower, upper)")
        self.bounds: dict[str, tuple[float, float]] = {}
        for name, pair in bounds.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings; got {name!r}")
            try:
                lower, upper = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise ValueError(
                    f"bounds[{name!r}] must be (lower, upper) numbers; got {pair!r}"
                ) from None
            if not (math.isfinite(lower) and math.isfinite(upper)):
                raise ValueError(f"bounds[{name!r}] must be finite; got ({lower}, {upper})")
            if not lower <= upper:
                raise ValueError(f"bounds[{name!r}]: lower {lower} must be <= upper {upper}")
            self.bounds[name] = (lower, upper)

        self.fixed: dict[str, float] = {}
        for name, value in (fixed or {}).items():
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"fixed[{name!r}] must be a finite number; got {value}")
            if name in self.bounds:
                lower, upper = self.bounds[name]
                if not lower <= value <= upper:
                    raise ValueError(
                        f"fixed[{name!r}] = {value} lies outside its bounds [{lower}, {upper}]"
                    )
            self.fixed[str(name)] = value
        # A parameter with equal bounds cannot be optimised: treat it as fixed.
        for name, (lower, upper) in self.bounds.items():
            if lower == upper and name not in self.fixed:
                self.fixed[name] = lower

        self.free_names: list[str] = [n for n in self.bounds if n not in self.fixed]
        if not self.free_names:
            raise ValueError("every parameter is fixed: nothing is left to optimise")
        self.names: list[str] = list(self.bounds) + [n for n in self.fixed if n not in self.bounds]

        if isinstance(log_scale, Mapping):
            log_names = [str(n) for n, on in log_scale.items() if on]
        elif isinstance(log_scale, str):
            log_names = [log_scale]
        else:
            log_names = [str(n) for n in log_scale]
        for name in log_names:
            if name not in self.bounds:
                raise ValueError(
                    f"log_scale names {name!r}, which is not a parameter; accepted: {list(self.bounds)}"
                )
            if self.bounds[name][0] <= 0.0:
                raise ValueError(
                    f"log_scale[{name!r}] needs a positive lower bound; got {self.bounds[name]}"
                )
        self.log_scale: set[str] = set(log_names)

        self.units: dict[str, str] = {}
        for name, unit in (units or {}).items():
            if name not in self.names:
                raise ValueError(f"units names {name!r}, which is not a parameter; accepted: {self.names}")
            self.units[name] = str(unit)

        self.constraints: list[LinearConstraint] = []
        for index, raw in enumerate(constraints):
            constraint = _as_constraint(raw, index)
            for name in constraint.coefficients:
                if name not in self.names:
                    raise ValueError(
                        f"constraints[{index}] names {name!r}, which is not a parameter; "
                        f"accepted: {self.names}"
                    )
                if name in self.log_scale:
                    raise ValueError(
                        f"constraints[{index}] involves {name!r}, which is on a log scale: a linear "
                        "constraint there is not linear in the optimiser's coordinates. Use a linear "
                        "scale for it or drop the constraint."
                    )
            self.constraints.append(constraint)
        self._unit_A, self._unit_b = self._build_unit_constraints()
        if self.constraints and not self._has_feasible_point():
            raise ValueError(
                "the constraints leave no feasible point inside the bounds: "
                + "; ".join(c.describe() for c in self.constraints)
            )

    # ------------------------------------------------------------------ geometry
    @property
    def dim(self) -> int:
        """Number of free (optimised) parameters."""
        return len(self.free_names)

    def _build_unit_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """Constraints as ``A u <= b`` on the unit cube of the free parameters."""
        rows, rhs = [], []
        for constraint in self.constraints:
            sign = 1.0 if constraint.operator == "<=" else -1.0
            row = np.zeros(self.dim)
            b = sign * constraint.rhs
            for name, c in constraint.coefficients.items():
                if name in self.fixed:
                    b -= sign * c * self.fixed[name]
                else:
                    lower, upper = self.bounds[name]
                    row[self.free_names.index(name)] = sign * c * (upper - lower)
                    b -= sign * c * lower
            rows.append(row)
            rhs.append(b)
        return np.asarray(rows, dtype=float).reshape(-1, self.dim), np.asarray(rhs, dtype=float)

    def unit_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """``(A, b)`` with ``A @ u <= b`` for feasible unit-cube points ``u`` (copies)."""
        return self._unit_A.copy(), self._unit_b.copy()

    def feasible_unit(self, unit: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Boolean mask of the rows of ``unit`` (n, d) inside the cube and the constraints."""
        unit = np.atleast_2d(np.asarray(unit, dtype=float))
        inside = np.all((unit >= -tol) & (unit <= 1.0 + tol), axis=1)
        if len(self._unit_b):
            inside &= np.all(unit @ self._unit_A.T <= self._unit_b + tol, axis=1)
        return inside

    def project_unit(self, unit: np.ndarray) -> np.ndarray:
        """The nearest feasible unit-cube point to each row (for back-ends blind to constraints)."""
        from scipy.optimize import minimize

        unit = np.atleast_2d(np.asarray(unit, dtype=float))
        out = np.clip(unit, 0.0, 1.0)
        if not len(self._unit_b):
            return out
        margin = 1e-9
        for i, u0 in enumerate(out):
            if self.feasible_unit(u0, tol=0.0)[0]:
                continue
            result = minimize(
                lambda u, u0=u0: 0.5 * float(np.sum((u - u0) ** 2)),
                u0,
                jac=lambda u, u0=u0: u - u0,
                bounds=[(0.0, 1.0)] * self.dim,
                constraints=[{
                    "type": "ineq",
                    "fun": lambda u: self._unit_b - margin - self._unit_A @ u,
                    "jac": lambda u: -self._unit_A,
                }],
                method="SLSQP",
            )
            candidate = np.clip(result.x, 0.0, 1.0)
            if not self.feasible_unit(candidate, tol=1e-9)[0]:
                raise RuntimeError(f"could not project {u0} onto the constraints")
            out[i] = candidate
        return out

    def _has_feasible_point(self) -> bool:
        from scipy.optimize import linprog

        result = linprog(
            np.zeros(self.dim), A_ub=self._unit_A, b_ub=self._unit_b,
            bounds=[(0.0, 1.0)] * self.dim, method="highs",
        )
        return bool(result.status == 0)

    # ------------------------------------------------------------------ maps
    def to_unit(self, point: Mapping[str, float]) -> np.ndarray:
        """Unit-cube coordinates (d,) of a validated point."""
        self.validate(point)
        return self._to_unit_unchecked(point)

    def _to_unit_unchecked(self, point: Mapping[str, float]) -> np.ndarray:
        unit = np.empty(self.dim)
        for i, name in enumerate(self.free_names):
            lower, upper = self.bounds[name]
            value = float(point[name])
            if name in self.log_scale:
                unit[i] = (math.log(value) - math.log(lower)) / (math.log(upper) - math.log(lower))
            else:
                unit[i] = (value - lower) / (upper - lower)
        return unit

    def to_unit_many(self, points: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Unit-cube coordinates (n, d) of validated points."""
        if not len(points):
            return np.zeros((0, self.dim))
        return np.stack([self.to_unit(p) for p in points])

    def from_unit(self, unit: np.ndarray) -> dict[str, float]:
        """The named point (fixed values included) at unit-cube coordinates ``unit`` (d,)."""
        unit = np.clip(np.asarray(unit, dtype=float).reshape(-1), 0.0, 1.0)
        if unit.shape != (self.dim,):
            raise ValueError(f"unit point must have {self.dim} coordinates; got {unit.shape}")
        point: dict[str, float] = {}
        for name in self.names:
            if name in self.fixed:
                point[name] = self.fixed[name]
                continue
            u = float(unit[self.free_names.index(name)])
            lower, upper = self.bounds[name]
            if name in self.log_scale:
                value = math.exp(math.log(lower) + u * (math.log(upper) - math.log(lower)))
            else:
                value = lower + u * (upper - lower)
            point[name] = min(max(value, lower), upper)
        return point

    def from_unit_many(self, unit: np.ndarray) -> list[dict[str, float]]:
        return [self.from_unit(u) for u in np.atleast_2d(unit)]

    # ------------------------------------------------------------------ checks
    def validate(self, point: Mapping[str, float]) -> None:
        """Raise ValueError saying what is wrong with ``point`` (names, NaN, bounds, constraints)."""
        if not isinstance(point, Mapping):
            raise ValueError(f"a point must be a dict name -> value; got {type(point).__name__}")
        unknown = [n for n in point if n not in self.names]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; accepted names: {self.names}")
        missing = [n for n in self.free_names if n not in point]
        if missing:
            raise ValueError(f"missing parameter(s) {missing}; a point needs {self.free_names}")
        for name, raw in point.items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number; got {raw!r}") from None
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"{name} is {value}: values must be finite numbers")
            if name in self.fixed:
                fixed = self.fixed[name]
                if not math.isclose(value, fixed, rel_tol=1e-9, abs_tol=1e-12):
                    raise ValueError(f"{name} = {value} but it is fixed at {fixed}")
                continue
            lower, upper = self.bounds[name]
            slack = 1e-12 * max(1.0, abs(lower), abs(upper))
            if not lower - slack <= value <= upper + slack:
                unit = f" {self.units[name]}" if name in self.units else ""
                raise ValueError(
                    f"{name} = {value}{unit} is out of bounds [{lower}, {upper}]{unit}"
                )
        full = {**self.fixed, **{k: float(v) for k, v in point.items()}}
        for constraint in self.constraints:
            slack = constraint.slack(full)
            if slack < -CONSTRAINT_RTOL * constraint.scale(full):
                raise ValueError(
                    f"point violates the constraint {constraint.describe()} "
                    f"(by {-slack:.3g}): {dict(point)}"
                )

    def is_valid(self, point: Mapping[str, float]) -> bool:
        try:
            self.validate(point)
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """JSON-safe description; ``Space.from_dict(space.to_dict())`` rebuilds it."""
        return {
            "bounds": {n: [lo, hi] for n, (lo, hi) in self.bounds.items()},
            "constraints": [c.to_list() for c in self.constraints],
            "log_scale": sorted(self.log_scale),
            "fixed": dict(self.fixed),
            "units": dict(self.units),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Space:
        accepted = {"bounds", "constraints", "log_scale", "fixed", "units"}
        unknown = set(data) - accepted
        if unknown:
            raise ValueError(f"unknown Space keys {sorted(unknown)}; accepted: {sorted(accepted)}")
        return cls(
            bounds={n: tuple(b) for n, b in data["bounds"].items()},
            constraints=[tuple(c) for c in data.get("constraints", [])],
            log_scale=data.get("log_scale", []),
            fixed=data.get("fixed") or {},
            units=data.get("units") or {},
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Space({self.to_dict()!r})"
