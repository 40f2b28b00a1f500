"""dragonfly-opt back-end: its GP bandit (``EuclideanGPBandit``) driven in ask/tell mode.

dragonfly-opt 0.1.7 is unmaintained since 2022. Three things make it usable here, all done from
the outside (no dragonfly code is copied or patched):

- numpy 2 removed names it uses: :mod:`bayes.numpy2_compat` re-adds them before the import;
- its ask/tell mode ignores points still being evaluated: the driver puts them (and failed points)
  in the bandit's ``eval_points_in_progress``, which its acquisitions already hallucinate as
  observed at the posterior mean, and adds each point of a batch there before asking the next;
- it fits hyper-parameters once and never again, and ``ask(n)`` with ``n`` loops forever past
  its initial design: the driver builds a fresh bandit from the whole history on every ``ask``
  (hyper-parameters refitted), skips its initial design (the initial design here is the same
  scrambled Sobol stream as BoTorch's), and asks one point at a time.

dragonfly knows nothing of linear constraints: a proposal outside them is projected onto the
feasible set (nearest point); a proposal near an evaluated, pending or failed point is replaced by an allowed
Sobol point. Infeasible designs (``tell(..., feasible=False)``) are not given to its GP (dragonfly
has no constraint model); they are hallucinated like failed points. Random steps are seeded from
(seed, history size, ask counter) with numpy's and Python's global generators restored afterwards.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.optimizer import Optimizer
from bayes.space import Space

INSTALL_HINT = (
    "the 'dragonfly' backend needs dragonfly-opt, which is not installed. Install it into this "
    "environment with:\n"
    "    pip install setuptools numpy\n"
    "    SETUPTOOLS_USE_DISTUTILS=stdlib pip install --no-build-isolation dragonfly-opt\n"
    "or use backend='botorch' (the default)."
)


def import_dragonfly() -> tuple[type, type]:
    """(EuclideanFunctionCaller, EuclideanGPBandit), importing dragonfly on numpy 2."""
    from bayes import numpy2_compat

    numpy2_compat.install()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from dragonfly.exd.experiment_caller import EuclideanFunctionCaller
            from dragonfly.opt.gp_bandit import EuclideanGPBandit
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT}\n(import failed: {error})") from error
    return EuclideanFunctionCaller, EuclideanGPBandit


def dragonfly_available() -> str | None:
    """None when dragonfly-opt imports; otherwise the reason (with how to install it)."""
    try:
        import_dragonfly()
    except ImportError as error:
        return str(error)
    return None


@contextlib.contextmanager
def _seeded_globals(seed: int):
    """Seed numpy's and Python's global generators (dragonfly uses them), then restore them."""
    # dragonfly draws from the legacy global generator, so that is the one to seed.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


class DragonflyOptimizer(Optimizer):
    """GP bandit of dragonfly-opt behind the common ask/tell face."""

    backend = "dragonfly"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "n_initial": None,  # default: max(6, 2 * dim), as for botorch
        "acq": "ei-ucb-ttei",  # dragonfly's acquisition ensemble
        "hp_tune_criterion": "ml",  # "ml" or dragonfly's "ml-post_sampling" (slower)
        "acq_opt_method": "default",  # dragonfly's: "direct" below 60 dimensions; or "rand"
    }

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        import_dragonfly()  # fail at construction, with the install hint, not at the first ask
        if self.options["n_initial"] is None:
            self.options["n_initial"] = max(6, 2 * space.dim)
        n_initial = self.options["n_initial"]
        if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 1:
            raise ValueError(f"option n_initial must be an integer >= 1; got {n_initial!r}")
        self.design_position = 0

    def _extra_state(self) -> dict:
        return {"design_position": self.design_position}

    def _load_extra_state(self, counters) -> None:
        self.design_position = int(counters.get("design_position", 0))

    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        values = [o.value for o in self.feasible_observations]
        used = self.n_observations + len(self.failures) + len(pending_unit)
        if len(values) < 2 or np.ptp(values) == 0.0:
            n_design = n
        else:
            n_design = min(n, max(0, self.options["n_initial"] - used))
        parts = []
        if n_design:
            design, self.design_position = quasirandom.draw_stream(
                self.space, "sobol", self.seed, self.design_position, n_design,
                self._avoid(pending_unit), separation=self.options["duplicate_radius"],
            )
            parts.append(design)
        rest = n - n_design
        if rest:
            taken = np.concatenate([pending_unit, *parts]) if parts else pending_unit
            parts.append(self._bandit(rest, taken))
        return np.concatenate(parts)

    def _bandit(self, n: int, pending: np.ndarray) -> np.ndarray:
        function_caller_cls, bandit_cls = import_dragonfly()
        seed = self._step_seed()
        chosen: list[np.ndarray] = []
        with _seeded_globals(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            caller = function_caller_cls(None, [[0.0, 1.0]] * self.space.dim)
            bandit = bandit_cls(
                caller,
                ask_tell_mode=True,
                options={
                    "acq": self.options["acq"],
                    "gpb_hp_tune_criterion": self.options["hp_tune_criterion"],
                    "acq_opt_method": self.options["acq_opt_method"],
                    "report_progress": False,
                },
            )
            bandit.initialise()
            bandit.first_qinfos = []  # our own initial design replaces dragonfly's
            bandit.tell([(o.unit.copy(), o.value) for o in self.feasible_observations])
            # dragonfly has no constraint model: infeasible designs are kept out of its GP and
            # hallucinated like failed points, so its acquisitions do not return to them
            hallucinated = (
                [p.copy() for p in pending]
                + [f.unit.copy() for f in self.failures]
                + [o.unit.copy() for o in self.observations if not o.feasible]
            )
            for step in range(n):
                bandit.eval_points_in_progress = hallucinated + [c.copy() for c in chosen]
                point = np.asarray(bandit.ask(), dtype=float).reshape(1, -1)
                point = self.space.project_unit(point)
                taken = np.concatenate([pending, np.stack(chosen)]) if chosen else pending
                avoid = self._avoid(taken)
                if not quasirandom.allowed(self.space, point, avoid)[0]:
                    point = quasirandom.candidate_set(self.space, 64, seed + step + 1, avoid)[:1]
                chosen.append(point[0])
        return np.stack(chosen)
