"""`microloop fronts`: several multi-objective campaigns' fronts on one scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc.analysis.pareto_seeds import compare_fronts, read_front

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "docs/data/case-studies/cs3_pareto/seed_0/summary.json"
LABELS = ["energy density at 10 W (Wh/L)", "energy density at 200 W (Wh/L)"]


def _summary(folder: Path, points: list[tuple[float, float]], labels=LABELS,
             dominated: list[tuple[float, float]] = ()) -> Path:
    """A report summary.json as `microloop report` writes it (the keys fronts reads)."""
    rows = [{"trial_id": i, "values": list(v), "meets_constraints": True, "on_front": True,
             "porosity": 0.25, "mass_loading_mg_cm2": 10.0 + i} for i, v in enumerate(points)]
    rows += [{"trial_id": 100 + i, "values": list(v), "meets_constraints": True,
              "on_front": False, "porosity": 0.3, "mass_loading_mg_cm2": 9.0}
             for i, v in enumerate(dominated)]
    (folder / "report").mkdir(parents=True)
    path = folder / "report" / "summary.json"
    path.write_text(json.dumps({"name": "mo", "objectives": labels, "pareto_front": rows,
                                "bounds": {"porosity": [0.25, 0.5],
                                           "mass_loading_mg_cm2": [8, 40]}}))
    return path


def test_hypervolume_of_a_staircase_is_its_rectangles(tmp_path):
    # three non-dominated points against the origin: 1*3 + 1*2 + 1*1 = 6 (closed form); a
    # second campaign with one point (2, 2): 4; the off-front row must not count
    _summary(tmp_path / "a", [(1, 3), (2, 2), (3, 1)], dominated=[(0.5, 0.5)])
    _summary(tmp_path / "b", [(2, 2)])
    c = compare_fronts([tmp_path / "a", tmp_path / "b"])
    assert c.hypervolumes == pytest.approx((6.0, 4.0))
    assert c.end_range(0) == (2.0, 3.0) and c.end_range(1) == (2.0, 3.0)
    assert len(c.fronts[0].points) == 3
    # against (1, 1), (1, 3) and (3, 1) sit on the reference's lines and add nothing; (2, 2)
    # adds its 1 x 1 box
    assert compare_fronts([tmp_path / "a"], reference=(1, 1)).hypervolumes[0] == pytest.approx(1)


def test_the_shipped_seed_0_front_regenerates_its_documented_ends():
    # docs/case-studies.md: a 21-design front whose ends are 726.1 Wh/L at 10 W and 472.6 at
    # 200 W, every front design at porosity 0.25, loadings 12 -> 40 mg/cm2
    front = read_front(SHIPPED)
    assert len(front.points) == 21
    assert round(front.end(0).values[0], 1) == 726.1
    assert round(front.end(1).values[1], 1) == 472.6
    assert front.parameter_range("porosity") == pytest.approx((0.25, 0.25), abs=5e-4)
    lo, hi = front.parameter_range("mass_loading_mg_cm2")
    assert round(lo) == 12 and round(hi) == 40


def test_fronts_of_different_objectives_are_refused(tmp_path):
    _summary(tmp_path / "a", [(1, 3)])
    _summary(tmp_path / "b", [(1, 3)], labels=["energy density at 10 W (Wh/L)",
                                               "specific energy at 200 W (Wh/kg)"])
    with pytest.raises(ValueError, match="only fronts of the same objectives"):
        compare_fronts([tmp_path / "a", tmp_path / "b"])
    # ... and so are fronts of different search spaces (the shipped cs3 front varies four)
    with pytest.raises(ValueError, match="not the same search space"):
        compare_fronts([tmp_path / "a", SHIPPED])


def test_a_folder_without_a_report_names_the_command(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="microloop report"):
        compare_fronts([tmp_path / "c"])


def test_a_single_objective_report_is_refused(tmp_path):
    (tmp_path / "s" / "report").mkdir(parents=True)
    (tmp_path / "s" / "report" / "summary.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="single-objective"):
        read_front(tmp_path / "s")


def test_negative_values_need_a_reference(tmp_path):
    _summary(tmp_path / "n", [(-1, 3), (2, 2)])
    with pytest.raises(ValueError, match="--reference"):
        compare_fronts([tmp_path / "n"])


def test_the_command_writes_the_comparison(tmp_path):
    _summary(tmp_path / "a", [(1, 3), (2, 2), (3, 1)])
    _summary(tmp_path / "b", [(2, 2)])
    from typer.testing import CliRunner

    from hpc.cli.app import app

    out = tmp_path / "out"
    runner = CliRunner()
    run = runner.invoke(app, ["fronts", str(tmp_path / "a"),
                              str(tmp_path / "b" / "report" / "summary.json"), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "hypervolume: 4-6" in run.output
    data = json.loads((out / "fronts.json").read_text())
    assert len(data["campaigns"]) == 2 and (out / "fronts.png").stat().st_size > 0
    bad = runner.invoke(app, ["fronts", str(tmp_path / "a"), "--out", str(out),
                              "--reference", "0"])   # one value for two objectives
    assert bad.exit_code == 2 and "--reference needs one value per objective" in bad.output
    good = runner.invoke(app, ["fronts", str(tmp_path / "a"), "--out", str(out),
                               "--reference", "1", "--reference", "1"])
    assert good.exit_code == 0 and "hypervolume: 1-1" in good.output, good.output
