"""Optimisers: bounds and constraints, pending and failed points, JSON restarts, determinism.

Every back-end runs a short asynchronous loop on a constrained 3-parameter space (one on a log
scale, one fixed) with small budgets so the whole file stays fast on two cores.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from bayes.dragonfly_backend import dragonfly_available
from bayes.optimizer import BACKENDS, make_optimizer, optimizer_from_state
from bayes.space import Space

DRAGONFLY_MISSING = dragonfly_available()
# Small acquisition budgets: the tests check behaviour, the benchmark checks quality.
FAST = {
    "botorch": {"n_initial": 4, "num_restarts": 2, "raw_samples": 64, "mc_samples": 32},
    "dragonfly": {"n_initial": 4, "acq": "ei-ucb"},
    "sobol": {},
    "random": {},
}
BACKEND_PARAMS = [
    "sobol",
    "random",
    "botorch",
    pytest.param(
        "dragonfly",
        marks=pytest.mark.skipif(DRAGONFLY_MISSING is not None, reason=str(DRAGONFLY_MISSING)),
    ),
]


def space() -> Space:
    return Space(
        bounds={"a": (0.0, 1.0), "b": (0.0, 2.0), "c": (1e-3, 1.0), "d": (0.0, 1.0)},
        constraints=[({"a": 1.0, "b": 1.0}, "<=", 1.2), ({"a": 1.0, "d": 1.0}, ">=", 0.8)],
        log_scale=["c"],
        fixed={"d": 0.5},
    )


def objective(point: dict) -> float:
    return -((point["a"] - 0.6) ** 2) - (point["b"] - 0.4) ** 2 - 0.1 * np.log10(point["c"]) ** 2


def distance(sp: Space, p: dict, q: dict) -> float:
    return float(np.linalg.norm(sp._to_unit_unchecked(p) - sp._to_unit_unchecked(q)))


def run_async(opt, n_evals: int, workers: int, rng: np.random.Generator, fail_every: int = 0):
    """Keep ``workers`` points in flight; finish a random one, tell it, ask one more."""
    in_flight = opt.ask(workers, pending=[])
    proposed = list(in_flight)
    done = 0
    while in_flight:
        point = in_flight.pop(int(rng.integers(len(in_flight))))
        done += 1
        if fail_every and done % fail_every == 0:
            opt.tell_failed([point], ["solver diverged"])
        else:
            opt.tell([point], [objective(point)])
        if len(proposed) < n_evals:
            new = opt.ask(1, pending=in_flight)
            for pending in in_flight:
                assert distance(opt.space, new[0], pending) > opt.options["duplicate_radius"]
            in_flight += new
            proposed += new
    return proposed


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_async_loop_respects_bounds_constraints_pending_and_failures(backend):
    sp = space()
    opt = make_optimizer(sp, backend=backend, seed=3, **FAST[backend])
    proposed = run_async(opt, n_evals=12, workers=3, rng=np.random.default_rng(0), fail_every=4)
    assert len(proposed) == 12
    for point in proposed:
        sp.validate(point)  # bounds, constraints, fixed value, names
        assert point["d"] == 0.5
    assert opt.n_observations + len(opt.failures) == 12
    assert len(opt.failures) == 3
    # nothing proposed near a failed point after it failed, and never again later
    later = opt.ask(4, pending=[])
    for failure in opt.failures:
        for point in later:
            assert distance(sp, point, failure.point) > opt.options["failure_radius"]
    best_point, best_value = opt.best()
    told = [o.value for o in opt.observations]
    assert best_value == max(told)
    assert objective(best_point) == pytest.approx(best_value)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_state_round_trips_through_json_and_continues_identically(backend):
    sp = space()
    opt = make_optimizer(sp, backend=backend, seed=5, **FAST[backend])
    run_async(opt, n_evals=7, workers=2, rng=np.random.default_rng(1), fail_every=5)
    pending = opt.ask(2, pending=[])
    state = json.loads(json.dumps(opt.state_dict()))
    restarted = optimizer_from_state(sp, state)
    assert type(restarted) is type(opt)
    assert restarted.n_observations == opt.n_observations
    assert restarted.best() == opt.best()
    assert restarted.state_dict() == opt.state_dict()
    assert restarted.ask(2, pending=pending) == opt.ask(2, pending=pending)
    assert type(opt).from_state(sp, state).state_dict() == state


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_same_seed_same_points(backend):
    sp = space()
    runs = []
    for seed in (11, 11, 12):
        opt = make_optimizer(sp, backend=backend, seed=seed, **FAST[backend])
        runs.append(run_async(opt, n_evals=6, workers=2, rng=np.random.default_rng(2)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_restarted_botorch_continues_with_the_same_points_step_after_step():
    sp = space()
    opt = make_optimizer(sp, backend="botorch", seed=2, **FAST["botorch"])
    first = opt.ask(5)
    opt.tell(first, [objective(p) for p in first])
    twin = optimizer_from_state(sp, json.loads(json.dumps(opt.state_dict())))
    for _ in range(2):
        a, b = opt.ask(1, pending=[]), twin.ask(1, pending=[])
        assert a == b
        opt.tell(a, [objective(a[0])])
        twin.tell(b, [objective(b[0])])


def test_botorch_large_batch_with_many_pending_uses_thompson_sampling():
    sp = space()
    opt = make_optimizer(sp, backend="botorch", seed=0, **FAST["botorch"])
    rng = np.random.default_rng(4)
    unit = rng.random((2000, sp.dim))
    points = sp.from_unit_many(unit[sp.feasible_unit(unit)][:100])
    opt.tell(points[:30], [objective(p) for p in points[:30]])
    pending = points[30:100]  # 70 pending: Thompson sampling even for a small batch
    small = opt.ask(3, pending=pending)
    assert opt.last_ask_method == "thompson"
    for point in small:
        sp.validate(point)
    batch = opt.ask(256, pending=pending)
    assert opt.last_ask_method == "thompson"
    assert len(batch) == 256
    unit_batch = np.stack([sp._to_unit_unchecked(p) for p in batch])
    assert len(np.unique(unit_batch.round(12), axis=0)) == 256
    for point in batch:
        sp.validate(point)
        assert min(distance(sp, point, q) for q in pending) > opt.options["duplicate_radius"]
    # Thompson draws concentrate where the model believes the optimum is
    mean_objective = np.mean([objective(p) for p in batch])
    sobol = make_optimizer(sp, backend="sobol", seed=0).ask(256)
    assert mean_objective > np.mean([objective(p) for p in sobol])


def test_botorch_known_noise_warm_start_and_initial_design():
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood

    from bayes.botorch_backend import fit_gp

    sp = space()
    rng = np.random.default_rng(7)
    unit = rng.random((60, sp.dim))
    prior_points = sp.from_unit_many(unit[sp.feasible_unit(unit)][:8])
    priors = [(p, objective(p)) for p in prior_points]
    opt = make_optimizer(sp, backend="botorch", seed=0, prior_observations=priors, **FAST["botorch"])
    assert opt.n_observations == 0  # earlier campaigns inform the model, not best()
    first = opt.ask(2)
    assert opt.design_position == 0  # enough prior data: no Sobol design was drawn
    assert opt.last_ask_method == "qlognei"
    for p in first:
        sp.validate(p)
    # JSON state keeps the priors
    state = json.loads(json.dumps(opt.state_dict()))
    assert len(state["options"]["prior_observations"]) == 8
    # without priors the first n_initial points come from the Sobol design
    cold = make_optimizer(sp, backend="botorch", seed=0, **FAST["botorch"])
    cold.ask(3)
    assert cold.design_position >= 3
    assert cold.last_ask_method == "sobol"
    # known noise goes to the GP as train_Yvar
    X = np.stack([sp._to_unit_unchecked(p) for p in prior_points])
    Y = np.array([[objective(p)] for p in prior_points])
    model = fit_gp(X, Y, np.full_like(Y, 1e-3))
    assert isinstance(model.likelihood, FixedNoiseGaussianLikelihood)
    noisy = make_optimizer(sp, backend="botorch", seed=0, **FAST["botorch"])
    noisy.tell(prior_points, Y.ravel().tolist(), noise_var=[1e-3] * len(prior_points))
    assert noisy._training_data()[2] is not None
    sp.validate(noisy.ask(1)[0])


def test_bad_calls_get_clear_errors():
    sp = space()
    with pytest.raises(ValueError, match=r"unknown backend 'gp'; accepted: \['botorch', 'botorch_pareto', 'botorch_transfer', 'dragonfly', 'multi_fidelity', 'random', 'sobol'\]"):
        make_optimizer(sp, backend="gp")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['n_init'\].*accepted: .*n_initial"):
        make_optimizer(sp, backend="botorch", n_init=5)
    opt = make_optimizer(sp, backend="sobol")
    point = opt.ask(1)[0]
    with pytest.raises(ValueError, match="tell_failed"):
        opt.tell([point], [float("nan")])
    with pytest.raises(ValueError, match="2 points but 1 values"):
        opt.tell([point, point], [1.0])
    with pytest.raises(ValueError, match="out of bounds"):
        opt.tell([{**point, "a": 3.0}], [1.0])
    with pytest.raises(ValueError, match=r"pending\[0\]: unknown parameter"):
        opt.ask(1, pending=[{**point, "zz": 1.0}])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        opt.ask(0)
    with pytest.raises(ValueError, match="best\\(\\) needs at least one observation"):
        opt.best()
    assert set(BACKENDS) == {"botorch", "botorch_pareto", "botorch_transfer", "dragonfly", "sobol", "random",
                             "multi_fidelity"}


def test_missing_dragonfly_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dragonfly", None)  # makes `import dragonfly...` fail
    monkeypatch.setitem(sys.modules, "dragonfly.exd.experiment_caller", None)
    with pytest.raises(ImportError, match="--no-build-isolation dragonfly-opt"):
        make_optimizer(space(), backend="dragonfly")


def test_botorch_thompson_sampling_is_chosen_by_the_batch_in_flight():
    """64 workers keep 62 points pending and ask for a few: the batch in flight (pending + asked)
    is at the threshold, so the ask is a Thompson draw, not a sequential qLogNEI whose cost grows
    with every asked point (64 workers were 89 % busy at 5000 observations with ask(4, 62))."""
    sp = space()
    opt = make_optimizer(sp, backend="botorch", seed=0, **FAST["botorch"])
    rng = np.random.default_rng(5)
    unit = rng.random((2000, sp.dim))
    points = sp.from_unit_many(unit[sp.feasible_unit(unit)][:100])
    opt.tell(points[:30], [objective(p) for p in points[:30]])
    opt.ask(4, pending=points[30:92])  # 62 pending + 4 = 66 in flight
    assert opt.last_ask_method == "thompson"
    opt.ask(4, pending=points[30:89])  # 59 + 4 = 63: below the threshold
    assert opt.last_ask_method == "qlognei"
