"""What a user gets from `pip install microloop-electrodes`, and the command's front door.

The slow test builds the sdist from a copy of this source tree, the wheel from that sdist (so a
file missing from the sdist breaks the wheel too), installs the wheel with `--no-deps --target`
into a temporary folder and runs the installed package from another folder with only that
folder on PYTHONPATH: built-in campaigns by name, the shipped generator weights, the version.
The fast tests drive the real typer app in-process: `campaigns list|show|copy`, `-h` on every
command, `-v` after a sub-command, no `<bool>` type after a flag.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli.app import DISTRIBUTION, app

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "hpc" / "campaigns").glob("*.toml"))
WEIGHTS = "kernels/generator/weights/generator_default.pt"
#: the flattened particles' model, shipped so campaigns that sampled it resume on it
FLATTEN_WEIGHTS = "kernels/generator/weights/generator_default_flatten.pt"
# any warning of setuptools' own (its words for a data folder that is not a listed package
# among them); the build runs with -W always so none is hidden
PACKAGING_WARNINGS = ("SetuptoolsWarning", "SetuptoolsDeprecationWarning", "would be ignored",
                      "absent from the `packages` configuration", "_IncludePackageDataAbuse")


def _run(args: list[str], cwd: Path, env: dict | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _build(source: Path, what: str, out: Path) -> tuple[Path, str]:
    """PEP 517 build through setuptools' backend (no network, no `build` package needed)."""
    code = (f"from setuptools import build_meta as b; import sys; "
            f"print(b.build_{what}(sys.argv[1]))")
    result = _run([sys.executable, "-W", "always", "-c", code, str(out)], cwd=source)
    name = result.stdout.strip().splitlines()[-1]
    return out / name, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder with the wheel installed, sdist names, wheel names, build log, wheel)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "runs",
        ".pytest_cache", ".ruff_cache"))
    dist = tmp / "dist"
    dist.mkdir()
    sdist, sdist_log = _build(source, "sdist", dist)
    with tarfile.open(sdist) as archive:
        sdist_names = archive.getnames()
        archive.extractall(tmp / "unpacked", filter="data")
    unpacked = next((tmp / "unpacked").iterdir())
    wheel, wheel_log = _build(unpacked, "wheel", dist)
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = archive.namelist()
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
          "--target", str(site), str(wheel)], cwd=tmp)
    return site, sdist_names, wheel_names, sdist_log + wheel_log, wheel


def _installed_python(site: Path, code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(site)
    return _run([sys.executable, "-c", code], cwd=cwd, env=env).stdout


@pytest.mark.slow
def test_wheel_and_sdist_carry_every_shipped_file_and_build_cleanly(installed):
    _site, sdist_names, wheel_names, log, _wheel = installed
    assert SHIPPED and "cs1_3C.toml" in SHIPPED and "convergence.toml" in SHIPPED
    top = sdist_names[0].split("/")[0]
    sdist = {name.removeprefix(top + "/") for name in sdist_names}
    for name in SHIPPED:
        assert f"hpc/campaigns/{name}" in wheel_names and f"hpc/campaigns/{name}" in sdist
    assert WEIGHTS in wheel_names and WEIGHTS in sdist
    assert FLATTEN_WEIGHTS in wheel_names and FLATTEN_WEIGHTS in sdist
    assert "slurm_templates/controller.sh" in wheel_names
    entry_points = next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
    assert entry_points.startswith("microloop_electrodes-")
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel_names)
    assert {"LICENSE", "README.md", "pyproject.toml"} <= sdist
    assert {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} <= sdist
    for phrase in PACKAGING_WARNINGS:
        assert phrase not in log, f"setuptools warned: {phrase}\n{log}"
    metadata = next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))
    assert metadata.startswith("microloop_electrodes-")


@pytest.mark.slow
def test_installed_wheel_runs_from_another_folder(installed, tmp_path):
    site, *_ = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(site)
    listed = _run([sys.executable, "-m", "hpc.cli", "campaigns", "list"], cwd=elsewhere,
                  env=env).stdout
    for name in SHIPPED:
        assert any(line.split()[0] == name.removesuffix(".toml") for line in listed.splitlines())
    copied = _run([sys.executable, "-m", "hpc.cli", "campaigns", "copy", "convergence",
                   "study.toml"], cwd=elsewhere, env=env)
    assert "study.toml" in copied.stdout
    version = _run([sys.executable, "-m", "hpc.cli", "--version"], cwd=elsewhere, env=env).stdout
    assert version.strip() == f"microloop {_project()['version']}"
    out = _installed_python(site, (
        "import json, hpc, kernels.generator.model as m\n"
        "from hpc.campaign.config import BUILTIN_CAMPAIGNS, load_campaign\n"
        "loaded = sorted(load_campaign(n).name for n in BUILTIN_CAMPAIGNS)\n"
        "from hpc.campaign.convergence_config import load_convergence_file\n"
        "c = load_campaign('cs1_3C')\n"
        "s = load_convergence_file('study.toml')\n"
        "model = m.load_default_model()\n"
        "from jobs.contract.spec import EvaluationSpec\n"
        "from jobs.generate import design_attributes\n"
        "v = design_attributes(0, {}, EvaluationSpec())['provenance']['microloop_version']\n"
        "print(json.dumps({'hpc': hpc.__file__, 'c_rate': c.objective.c_rate, "
        "'name': c.name, 'weights': m.default_weights_available(), 'version': v, "
        "'loaded': loaded, "
        "'sizes': s.study.cube_voxels, 'params': sum(p.numel() for p in model.parameters())}))\n"
    ), cwd=elsewhere)
    found = json.loads(out.strip().splitlines()[-1])
    assert Path(found["hpc"]).is_relative_to(site)  # the installed copy, not this source tree
    assert found["name"] == "cs1_3C" and found["c_rate"] == 3.0
    assert found["loaded"] == sorted(n.removesuffix(".toml") for n in SHIPPED
                                     if n != "convergence.toml")  # every campaign, by name
    assert found["weights"] and found["params"] > 1000
    assert found["sizes"] == [32, 48, 64, 96, 128]
    assert found["version"] == _project()["version"]  # the voxel store's provenance


@pytest.mark.slow
def test_console_script_of_a_venv_install_finds_the_builtins_from_another_folder(installed,
                                                                                tmp_path):
    """What a user types after `pip install microloop-electrodes`: the `microloop` script
    of a fresh virtual environment, run from a folder that is not the source tree.

    The venv gets only the wheel (pip sees an empty environment, so nothing outside it is
    touched); the already installed dependencies are then made visible with a `.pth` line,
    which adds their folder to sys.path without running the `.pth` files in it (so no
    editable install of this tree comes along).
    """
    import sysconfig
    import venv

    *_, wheel = installed
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-compile", "--quiet", str(wheel)], cwd=tmp_path)
    own_site = Path(_run([str(python), "-c", "import sysconfig; "
                          "print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip())
    (own_site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    microloop = [str(env_dir / "bin" / "microloop")]

    def command(*args: str) -> str:
        return _run([*microloop, *args], cwd=elsewhere, env=env).stdout

    assert command("--version").strip() == f"microloop {_project()['version']}"
    listed = {line.split()[0] for line in command("campaigns", "list").splitlines()}
    assert listed == {name.removesuffix(".toml") for name in SHIPPED}
    # a built-in name where a campaign file goes: the controller script `submit` renders
    script = command("submit", "cs1_3C", "--dir", "runs/cs1_3C", "--dry-run")
    assert "run cs1_3C --dir" in script and str(python) in script
    # the docs' way to a study file: copy the built-in one, then name the copy
    command("campaigns", "copy", "convergence", "study.toml")
    assert "[study]" in (elsewhere / "study.toml").read_text()
    command("convergence", "study.toml", "-h")
    # a small volume written and read back by the installed package (zarr + voxel size)
    command("generate", "-p", "am_wt_frac=0.94", "-p", "porosity=0.35", "--size", "32",
            "--voxel-um", "0.5", "--out", "vol.zarr")
    records = json.loads(command("characterise", "vol.zarr", "--json"))
    assert records[0]["voxel_um"] == 0.5
    located = _run([str(python), "-c", "import hpc; print(hpc.__file__)"], cwd=elsewhere,
                   env=env).stdout.strip()
    assert Path(located).is_relative_to(own_site)  # the wheel's copy, not this source tree


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_distribution_name_license_and_imports_are_declared():
    project = _project()
    assert project["name"] == DISTRIBUTION == "microloop-electrodes"
    assert project["scripts"] == {"microloop": "hpc.cli:main"}
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "BSD 3-Clause" in text and "2026, the microloop developers" in text
    declared = " ".join(project["dependencies"])
    for distribution in ("scikit-image", "galvani", "tifffile", "zarr", "pybamm", "taufactor"):
        assert distribution in declared


def test_metadata_lookups_and_install_hints_name_the_distribution():
    """`version("microloop")` or `pip install microloop[...]` would find the unrelated PyPI
    project (or nothing): the provenance version and the hints must use the distribution."""
    wrong = re.compile(r"""version\(["']microloop["']\)|microloop\[""")
    offenders = [f"{path.relative_to(REPO)}:{number}"
                 for folder in ("kernels", "bayes", "jobs", "hpc", "tests", "docs")
                 for path in sorted((REPO / folder).rglob("*"))
                 if path.suffix in (".py", ".md") and path != Path(__file__).resolve()
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if wrong.search(line)]
    assert not offenders, offenders


# ------------------------------------------------------------------ the command's front door

def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_campaigns_list_names_every_shipped_file_with_a_description():
    result = invoke("campaigns", "list", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["schema_version"] == "microloop.campaigns/1"
    listed = answer["files"]
    assert sorted(f"{name}.toml" for name in listed) == SHIPPED
    for name, entry in listed.items():
        assert entry["description"], name
        data = tomllib.loads((REPO / "hpc" / "campaigns" / f"{name}.toml").read_text())
        assert entry["kind"] == ("convergence study" if "study" in data else "campaign")
    table = invoke("campaigns", "list")
    assert table.exit_code == 0 and len(table.stdout.splitlines()) == len(SHIPPED)


def test_every_shipped_campaign_loads_by_name():
    from hpc.campaign.config import BUILTIN_CAMPAIGNS, load_campaign

    campaigns = {n.removesuffix(".toml") for n in SHIPPED} - {"convergence"}
    assert set(BUILTIN_CAMPAIGNS) == campaigns
    for name in sorted(campaigns):
        assert load_campaign(name).name == name


def test_campaigns_show_prints_the_file_and_copy_refuses_to_overwrite(tmp_path):
    shown = invoke("campaigns", "show", "cs1_3C")
    assert shown.exit_code == 0
    assert shown.stdout == (REPO / "hpc" / "campaigns" / "cs1_3C.toml").read_text()
    target = tmp_path / "mine.toml"
    copied = invoke("campaigns", "copy", "cs1_3C", str(target))
    assert copied.exit_code == 0, copied.output
    assert target.read_text() == shown.stdout
    target.write_text(target.read_text().replace("c_rate = 3.0", "c_rate = 2.5"))
    again = invoke("campaigns", "copy", "cs1_3C", str(target))
    assert again.exit_code == 1 and "not overwritten" in again.output
    assert "c_rate = 2.5" in target.read_text()  # the user's edit survives
    from hpc.campaign.config import load_campaign

    assert load_campaign(target).objective.c_rate == 2.5
    into_folder = invoke("campaigns", "copy", "quick", str(tmp_path))
    assert into_folder.exit_code == 0 and (tmp_path / "quick.toml").is_file()
    unknown = invoke("campaigns", "show", "cs9")
    assert unknown.exit_code == 2 and "cs1_3C" in unknown.output  # lists the accepted names


def _all_commands() -> list[list[str]]:
    import typer

    root = typer.main.get_command(app)
    paths = []
    for name, command in root.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


def test_every_command_takes_h_and_shows_no_bool_after_flags():
    paths = _all_commands()
    assert ["cell"] in paths and ["calibrate"] in paths and ["campaigns", "copy"] in paths
    for path in paths:
        result = invoke(*path, "-h")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and "<bool>" not in result.output, path
        assert "-v, --verbose" in result.output, path


def test_verbose_after_the_sub_command_turns_on_debug_logging():
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.WARNING)
        assert invoke("campaigns", "list").exit_code == 0
        assert root.level == logging.INFO
        assert invoke("campaigns", "list", "-v").exit_code == 0
        assert root.level == logging.DEBUG
        root.setLevel(logging.WARNING)
        assert invoke("-v", "campaigns", "list").exit_code == 0
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(before)


def test_cell_help_shows_ranges_and_units():
    result = invoke("cell", "-h")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the help is wrapped at 80 columns
    for expected in ("0.1-20000 W", "20-300 um", "[mg/cm2]", "1e-05-1000 S/m",
                     "repeat the flag"):
        assert expected in text, expected


def _options_of_every_command():
    import typer

    root = typer.main.get_command(app)
    stack = [([name], command) for name, command in root.commands.items()]
    while stack:
        path, command = stack.pop()
        if hasattr(command, "commands"):
            stack += [([*path, n], c) for n, c in command.commands.items()]
            continue
        for param in command.params:
            yield path, command, param


def test_every_list_option_is_given_by_repeating_the_flag_and_says_so():
    """One way to give a list: repeat the flag (click's `multiple`); its help says so."""
    lists = {(" ".join(path), max(param.opts, key=len))
             for path, _command, param in _options_of_every_command()
             if getattr(param, "multiple", False)}
    assert {("generate", "--param"), ("convergence", "--sizes"), ("convergence", "--design"),
            ("case-study", "--seeds"), ("cell", "--power-W"), ("calibrate", "--measured"),
            ("train-generator", "--grid")} <= lists
    for path, _command, param in _options_of_every_command():
        if getattr(param, "multiple", False):
            assert "repeat the flag" in " ".join((param.help or "").split()), (path, param.opts)
        else:  # a value that is a list in disguise (comma-separated) is not an option type
            assert "comma-separated" not in (param.help or ""), (path, param.opts)


def test_options_with_a_fixed_set_of_values_name_them_in_help():
    from hpc.campaign.config import EXECUTORS
    from kernels.metrics.solvers import available_backends

    accepted = {("run", "--executor"): EXECUTORS, ("submit", "--executor"): EXECUTORS,
                ("case-study", "--executor"): EXECUTORS, ("doctor", "--executor"): EXECUTORS,
                ("convergence", "--executor"): ("local", "slurm"),
                ("characterise", "--backend"): available_backends(),
                ("convergence", "--backend"): available_backends(),
                ("characterise", "--axis"): ("z", "y", "x"),
                ("train-generator", "--method"): ("statistics", "slicegan")}
    for (command, option), values in accepted.items():
        text = " ".join(invoke(command, "-h").output.split())
        line = text[text.index(option):][:300]
        for value in values:
            assert value in line, (command, option, value, line)


def test_case_study_seeds_repeated_or_in_one_value_are_the_same_list(tmp_path):
    """Both spellings reach the comparison as the same seeds (its error names the seeds it
    could not find)."""
    outputs = []
    for seeds in (["--seeds", "0", "--seeds", "3"], ["--seeds", "0,3"]):
        result = invoke("case-study", "cs2", "--dir", str(tmp_path / "none"), *seeds)
        outputs.append(result.output.replace(str(tmp_path), "T"))
    assert outputs[0] == outputs[1] and "for seeds 0, 3" in outputs[0]
