"""The multi-objective back-end (botorch_pareto): vector tells, a Pareto front, outcome
constraints, infeasible designs told as infeasible, JSON restarts.

Problems are published ones nobody here tuned on: BraninCurrin (Belakaria et al. 2019, BoTorch's
test suite; its reference point and maximum hypervolume are BoTorch's) and a constrained
variant with an outcome threshold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes.multiobjective import hypervolume, non_dominated
from bayes.optimizer import make_optimizer, optimizer_from_state
from bayes.space import Space

FAST = {"num_restarts": 2, "raw_samples": 128, "mc_samples": 32}
SQUARE = Space({"a": (0.0, 1.0), "b": (0.0, 1.0)})


def branin_currin(point: dict) -> list[float]:
    import torch
    from botorch.test_functions.multi_objective import BraninCurrin

    x = torch.tensor([[point["a"], point["b"]]], dtype=torch.float64)
    return BraninCurrin(negate=True)(x)[0].tolist()


def test_non_dominated_and_hypervolume_match_closed_forms():
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [1.0, 0.0]])
    assert non_dominated(Y).tolist() == [True, True, True, False, True]
    # the staircase (0, 1), (0.5, 0.5), (1, 0) above (-1, -1), in strips of a:
    # [-1, 0] x 2 + [0, 0.5] x 1.5 + [0.5, 1] x 1 = 2 + 0.75 + 0.5
    assert hypervolume(Y, [-1.0, -1.0]) == pytest.approx(3.25)
    assert hypervolume(Y, [2.0, 2.0]) == 0.0


def test_pareto_loop_grows_the_hypervolume_beyond_its_sobol_design():
    from botorch.test_functions.multi_objective import BraninCurrin

    problem = BraninCurrin(negate=True)
    ref = problem.ref_point.tolist()
    opt = make_optimizer(SQUARE, "botorch_pareto", seed=0, n_objectives=2, **FAST)
    design = opt.ask(6)
    assert opt.last_ask_method == "sobol"
    opt.tell(design, [branin_currin(p) for p in design])
    start = hypervolume([o.value for o in opt.observations], ref)
    for _ in range(5):
        batch = opt.ask(2)
        assert opt.last_ask_method == "qlognei"
        opt.tell(batch, [branin_currin(p) for p in batch])
    grown = hypervolume([o.value for o in opt.observations], ref)
    # 16 points: BoTorch's maximum hypervolume is 59.36; the Sobol design alone stays far below
    assert grown > start + 5.0 and grown < float(problem.max_hv)
    front = opt.pareto_front()
    values = np.array([v for _, v in front])
    assert non_dominated(values).all() and len(front) >= 3
    # a restart continues identically
    twin = optimizer_from_state(SQUARE, json.loads(json.dumps(opt.state_dict())))
    assert twin.ask(2) == opt.ask(2)
    # a large batch (Thompson draws with random Chebyshev weights) spreads along the front
    big = opt.ask(64)
    assert opt.last_ask_method == "thompson" and len(big) == 64
    Yb = np.array([branin_currin(p) for p in big])
    assert hypervolume(Yb, ref) > 0.8 * grown


def test_outcome_constraint_and_infeasible_designs():
    """Maximise (a, 1 - a) (a whole front) subject to the outcome b >= 0.7 (told third); designs
    with a + b > 1.6 are physically infeasible (no value)."""
    opt = make_optimizer(SQUARE, "botorch_pareto", seed=1, n_objectives=2,
                         outcome_constraints=[[">=", 0.7]], **FAST)

    def tell(points):
        for p in points:
            if p["a"] + p["b"] > 1.6:
                opt.tell(p, None, feasible=False)
            else:
                opt.tell(p, [p["a"], 1.0 - p["a"] + 0.3 * p["b"], p["b"]])

    grid = SQUARE.from_unit_many(np.stack(np.meshgrid(np.linspace(0.05, 0.95, 4),
                                                      np.linspace(0.05, 0.95, 4)), -1).reshape(-1, 2))
    tell(grid)
    assert opt.n_infeasible == 1  # (0.95, 0.95)
    with pytest.raises(ValueError, match="expected 3"):
        opt.tell(grid[0], [1.0, 2.0])
    proposals = []
    for _ in range(3):
        batch = opt.ask(2)
        proposals += batch
        tell(batch)
    # proposals respect the outcome constraint b >= 0.7 (learnt, not told) and stay feasible
    assert np.mean([p["b"] >= 0.65 and p["a"] + p["b"] <= 1.65 for p in proposals]) >= 0.8, proposals
    for point, _values in opt.pareto_front():
        assert point["b"] >= 0.7  # the front holds constraint-satisfying designs only
    point, value = opt.best()
    assert point["b"] >= 0.7 and value == max(v[0] for _, v in opt.pareto_front())
    state = json.loads(json.dumps(opt.state_dict()))
    assert [o["value"] for o in state["observations"]].count(None) == 1


def test_pareto_options_are_checked():
    with pytest.raises(ValueError, match="n_objectives must be an integer >= 2"):
        make_optimizer(SQUARE, "botorch_pareto", n_objectives=1)
    with pytest.raises(ValueError, match=r"outcome_constraints\[0\]"):
        make_optimizer(SQUARE, "botorch_pareto", outcome_constraints=[["=>", 1.0]])
    with pytest.raises(ValueError, match="reference_point must be 2 finite numbers"):
        make_optimizer(SQUARE, "botorch_pareto", reference_point=[0.0])
    opt = make_optimizer(SQUARE, "botorch_pareto")
    with pytest.raises(ValueError, match="must be a list of 2 numbers"):
        opt.tell({"a": 0.1, "b": 0.2}, 3.0)
