"""Named campaign variants: the documented case-study fidelity is one option away (issue 16)."""

from __future__ import annotations

import pytest

from hpc.analysis.case_studies import CASE_STUDIES
from hpc.campaign.config import ConfigError, campaign_profiles, load_campaign


def _write(tmp_path, text: str):
    base = load_campaign("quick")
    path = tmp_path / "c.toml"
    path.write_text(
        f'name = "p"\n[space]\nam_wt_frac = [0.85, 0.95]\nporosity = [0.3, 0.45]\n'
        f'[objective]\nkind = "energy_density_Wh_L"\npower_W = 10.0\n'
        f'[fidelity]\nn_cubes = 1\ncube_voxels = {base.fidelity.cube_voxels}\n'
        f'[optimizer]\nbudget = 4\nn_initial = 2\n' + text)
    return path


def test_every_case_study_file_has_a_paper_profile_at_two_cubes_and_40_evaluations():
    for members in CASE_STUDIES.values():
        for name in members:
            assert "paper" in campaign_profiles(name)
            plain, paper = load_campaign(name), load_campaign(name, profile="paper")
            assert paper.optimizer.budget >= 40 > plain.optimizer.budget
            assert paper.fidelity.n_cubes >= 2 and paper.fidelity.cube_voxels >= 96
            assert paper.objective.noise_from_samples
            # the profile changes fidelity and budget, never what is optimised
            assert paper.objective.kind == plain.objective.kind
            assert paper.objective.power_W == plain.objective.power_W
            assert paper.space == plain.space


def test_profile_merges_key_by_key_and_overrides_win(tmp_path):
    path = _write(tmp_path, '[profiles.big.fidelity]\ncube_voxels = 48\n'
                            '[profiles.big.optimizer]\nbudget = 9\n')
    config = load_campaign(path, {"optimizer": {"budget": 6}}, profile="big")
    assert config.fidelity.cube_voxels == 48
    assert config.fidelity.n_cubes == 1          # keys the profile does not name are kept
    assert config.optimizer.budget == 6          # an override wins over the profile
    assert config.optimizer.n_initial == 2
    assert load_campaign(path).optimizer.budget == 4   # without the profile: the plain file


def test_unknown_profile_and_bad_profile_values_are_refused_by_name(tmp_path):
    path = _write(tmp_path, '[profiles.big.fidelity]\ncube_voxels = 4\n')
    with pytest.raises(ConfigError, match="profile 'paper' is not defined.*big"):
        load_campaign(path, profile="paper")
    with pytest.raises(ConfigError, match="fidelity.cube_voxels"):
        load_campaign(path, profile="big")


def test_paper_wide_boxes_contain_the_paper_box_and_stay_inside_the_physical_ranges():
    from kernels.cell import ranges

    for name in ("cs2", "cs2_high", "cs3", "cs3_power"):
        paper, wide = load_campaign(name, profile="paper"), load_campaign(name, profile="paper_wide")
        assert wide.fidelity == paper.fidelity and wide.optimizer.budget == paper.optimizer.budget
        for key, physical in ranges.DESIGN_PARAMETERS.items():
            narrow, widened = getattr(paper.space, key), getattr(wide.space, key)
            if isinstance(narrow, list):
                assert widened[0] <= narrow[0] and widened[1] >= narrow[1]
                assert physical.contains(widened[0]) and physical.contains(widened[1])
        assert wide.space.am_wt_frac[1] > paper.space.am_wt_frac[1]
        assert wide.space.porosity[0] < paper.space.porosity[0]


def test_the_calendering_profiles_move_the_paper_campaign_by_the_calendering_only():
    """The calendering comparison of docs/case-studies.md: one named option, nothing else moved.
    `paper` runs the default (round particles, "rearrange"), `paper_rearrange` names it (the
    documented 'Under round particles' runs), `paper_flatten` reproduces the runs before."""
    members = [name for names in CASE_STUDIES.values() for name in names] + ["cs3_pareto"]
    for name in members:
        paper = load_campaign(name, profile="paper")
        rearranged = load_campaign(name, profile="paper_rearrange")
        flattened = load_campaign(name, profile="paper_flatten")
        assert paper.generator.calendering == "rearrange"
        assert rearranged == paper
        assert flattened.generator.calendering == "flatten"
        assert flattened.model_copy(update={"generator": paper.generator}) == paper
