"""Every fenced block of README.md and docs/*.md is classified, and every runnable one runs.

A block is one of:
- **python**: run, a page's blocks in order in one namespace, in a temporary folder with the
  package importable; a line followed by `# SomeError: message` must raise just that. Names a page leaves to its reader (`volume_metrics`, `conductivity`) are
  made first by PRELUDE; a block the page says is long runs with SCALED_PYTHON's replacements
  (each must still match the page: a changed block fails here until the table follows it).
- **shell command lines** (in ```bash/console/sh blocks, and command-like lines of plain
  blocks): a `microloop ...` line is tests/test_docs_examples.py's (parsed, run or run scaled
  down); an assignment line (`export X=1`, `D=tests/data/...`) is checked by bash and its paths
  must exist; a `python tests/benchmarks/...` line runs with SCALED_SHELL's options (the same
  set/drop mechanism the `microloop` lines use); anything else (an install, SLURM, a GPU) is in
  EXEMPT with the test that covers it or why it cannot run here.
- **toml**: test_docs_examples.py parses them and loads the campaign and study files.
- **prose**: plain blocks without a command (diagrams, outputs, file trees).

Keys are the page and the line's first words, never a line number: a block that moves keeps its
key; a new or edited command line without a rule fails `test_every_command_line_has_a_rule`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_docs_examples import (
    EXAMPLE_LANGUAGES,
    EXAMPLES,
    PAGES,
    REPO,
    SYNOPSIS_LANGUAGES,
    _fenced_blocks,
    _logical_lines,
    _open_synopsis,
    scaled_down,
)
from typer.testing import CliRunner

from hpc.cli.app import app

#: first words of a command line in a plain (synopsis) block
COMMAND_WORDS = {"microloop", "python", "python3", "bash", "sh", "pip", "sbatch", "srun",
                 "mpiexec", "export", "nohup", "nice", "uv", "git"}
OTHER_LANGUAGES = {"python", "toml"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class CommandLine:
    """One logical shell line of a page: where, as written, and its stable key."""

    page: str
    line_number: int
    text: str

    @property
    def key(self) -> str:
        return f"{self.page}: {' '.join(w[:64] for w in _words(self.text)[:6])}"

    @property
    def tokens(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # prose with an apostrophe
        return line.split()


def _program(tokens: list[str]) -> str | None:
    """The program a line runs: after assignments, `export`, `nice -n N`, `nohup`."""
    rest = list(tokens)
    while rest:
        if ASSIGNMENT.match(rest[0]) or rest[0] in ("export", "nohup"):
            rest.pop(0)
        elif rest[0] == "nice":
            rest = rest[3:] if rest[1:2] == ["-n"] else rest[1:]
        else:
            return Path(rest[0]).name
    return "export" if tokens else None


def collect_blocks():
    """(kind, page, first line, body) of every fenced block; shell lines split out."""
    blocks, lines = [], []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        for first, language, body in _fenced_blocks(page):
            if language in OTHER_LANGUAGES:
                blocks.append((language, name, first, body))
                continue
            if language not in EXAMPLE_LANGUAGES | SYNOPSIS_LANGUAGES:
                blocks.append(("unknown", name, first, body))
                continue
            plain = language in SYNOPSIS_LANGUAGES
            found = 0
            for offset, text in _logical_lines(body, plain):
                words = _words(text)
                program = _program(words)
                if program is None or (plain and program not in COMMAND_WORDS):
                    continue
                found += 1
                if program != "microloop":
                    lines.append(CommandLine(name, first + offset, text))
            blocks.append(("commands" if found else "prose", name, first, body))
    return blocks, lines


BLOCKS, COMMAND_LINES = collect_blocks()

#: command lines not run here: the test that covers them, or why they cannot run here
EXEMPT = {
    "README.md: bash .ci/install && .venv/bin/microloop run quick":
        "install: makes the virtual environment; the fresh-clone CI (.ci/run) runs it, and "
        "`microloop run quick` runs scaled down in tests/test_docs_examples.py",
    "README.md: bash .ci/test":
        "SLURM: installs, starts the test SLURM and runs this whole suite (it is the suite)",
    "docs/generator.md: sbatch --gres=gpu:1 --cpus-per-task=8 --time=04:00:00 --wrap "
    "microloop train-generator procedural --out model.pt --steps 2000":
        "SLURM and a GPU: 4 h of training; the wrapped train-generator command is parsed by "
        "tests/test_docs_examples.py and run for 2 steps by tests/test_train.py",
    "docs/generator.md: python tests/benchmarks/gpu_train_generator.py --out-dir $OUT --minutes 8":
        "GPU: 8 minutes of training on the device; its --dry-run line on the same page runs "
        "here (tests/test_docs_blocks.py)",
    "docs/optimisers.md: pip install setuptools":
        "install: network access to the package index",
    "docs/optimisers.md: SETUPTOOLS_USE_DISTUTILS=stdlib pip install --no-build-isolation "
    "dragonfly-opt":
        "install: network access to the package index (the dragonfly back-end is then run "
        "by tests/test_optimizer.py)",
    "docs/solvers.md: python tests/benchmarks/gpu_check.py --sizes 64 128 256":
        "GPU: CUDA solves of 64-256³ on the device (tests/test_cluster_gpu.py checks the "
        "script's CPU dry run)",
    "docs/convergence.md: OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true PYTHONPATH=. nice -n 5":
        "cost: bench_resolution has no size option and takes 257 CPU-s (the page says); "
        "tests/test_physics_resolution.py checks the paired volumes it compares",
    "docs/cell-model.md: OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true PYTHONPATH=. nohup "
    "python tests/benchmarks/bench_cell_sensitivity.py":
        "cost: bench_cell_sensitivity has no size option and scores hundreds of designs "
        "(tens of CPU-minutes); tests/test_cell_model_options_campaign.py runs its choices",
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py --part refit "
    "[--small]":
        "cost: fits GPs on 250-1000 observations in the background and cold (minutes even with "
        "--small); tests/test_bayes_scaling.py checks the background refit it measures",
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py --part switch":
        "cost: fits GPs on 900-1000 observations and asks 12 times at 999-1008 (minutes); "
        "tests/test_bayes_scaling.py checks the search budget across the switch it measures",
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py --part method":
        "cost: fits GPs on 1000 of 1000 and 5000 observations (minutes); "
        "tests/test_optimizer.py checks the batch-method rule it measures",
    "docs/optimisers.md: OMP_NUM_THREADS=1 nice -n 5 python "
    "tests/benchmarks/bench_multi_fidelity_cs3.py":
        "cost: real cs3 evaluations at two 96^3 cubes, 1-2 CPU-min per seed plus its anchors; "
        "tests/test_multi_fidelity.py runs a multi-fidelity campaign",
    "docs/campaigns.md: python tests/benchmarks/bench_transfer_cs3.py --compare-cold "
    "$SEED_DIR/cs3_power --compare-transfer transfer_seed_0":
        "cost: compares the folders of paper-profile campaigns (hours of runs); "
        "tests/test_transfer.py runs the warm-started campaigns it compares",
}

#: benchmark lines run scaled down: options set (replacing the page's) or dropped
SCALED_SHELL = {
    "docs/campaigns.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_local_identity.py "
    "--jobs 8":
        {"set": {"--jobs": ["2"], "--calls": ["20"], "--repeats": ["2"]}},
    "docs/convergence.md: python tests/benchmarks/bench_convergence_scale.py runs/c1000":
        {"set": {}, "after_microloop": "--dir runs/c1000"},
    "docs/generator.md: python tests/benchmarks/gpu_train_generator.py --out-dir /tmp/gen_dry "
    "--dry-run":
        {"set": {"--out-dir": ["gen_dry"]}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_multi_fidelity.py --out "
    "bench_mf --problem":
        {"set": {"--seeds": ["1"], "--budget-top": ["2"], "--max-evaluations": ["3"]}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_optimizers.py --out "
    "bench_out [--problems":
        {"set": {"--problems": ["branin"], "--seeds": ["0"], "--backends": ["sobol,random"],
                 "--evaluations": ["6"], "--skip-timing": []}},
    "docs/optimisers.md: python tests/benchmarks/bench_optimizers.py --out bench_out --table":
        {"set": {}, "after_line": "docs/optimisers.md: OMP_NUM_THREADS=1 python "
                                  "tests/benchmarks/bench_optimizers.py --out bench_out [--problems"},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_feasibility.py --seeds "
    "0-4 --evaluations":
        {"set": {"--seeds": ["0"], "--evaluations": ["4"]}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_ask.py --part ask8 "
    "--variant":
        {"set": {"--small": []}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 nice -n 5 python tests/benchmarks/bench_bo_quality.py":
        {"set": {"--seeds": ["1"], "--budget": ["6"], "--q": ["2"]}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_campaign_persistence.py "
    "--sizes 100 1000":
        {"set": {"--sizes": ["20", "40"], "--more": ["5"]}},
    "docs/optimisers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_bo_utilisation.py "
    "--workers 64 256":
        {"set": {"--workers": ["8"], "--observations": ["20"], "--window": ["20"],
                 "--warmup": ["5"]}},
    # the row this page's code does not run elsewhere: the charge-remapped cathode (~10 s)
    "docs/cell-model.md: OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true PYTHONPATH=. python "
    "tests/benchmarks/bench_capacity_basis.py":
        {"set": {"--candidates": ["charge_remap"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_characterise_speed.py "
    "--cubes 2":
        {"set": {"--cubes": ["1"], "--size": ["48"], "--no-taufactor": []}},
    # 48^3 at 0.4 um: the default round particles need a box of ~2.4 diameters to pack
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_characterise_speed.py "
    "--stages --cubes 3":
        {"set": {"--cubes": ["1"], "--size": ["48"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_characterise_speed.py "
    "--stages --before dec04":
        {"set": {"--cubes": ["1"], "--size": ["48"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_native_setup.py --size "
    "128 --repeats":
        {"set": {"--size": ["16"], "--repeats": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --record "
    "runs.json":
        {"set": {"--cases": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_stop_rule.py --timing 3":
        {"set": {"--timing": ["1"], "--size": ["24"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_startup.py --jobs 3":
        {"set": {"--jobs": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_jacobi_forms.py --repeats 9":
        {"set": {"--size": ["16"], "--repeats": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_solvers.py --sizes 64 128":
        {"set": {"--sizes": ["16"], "--repeats": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_solvers.py --sizes 128 "
    "--repeats":
        {"set": {"--sizes": ["16"], "--repeats": ["1"]}},
    # one timed run per back-end as the two lines above: each run is a fresh process (torch,
    # numba, the copy anchor: ~5 CPU-s at any size), and the page's default 2 made this line
    # 115 of the file's 274 CPU-s; the median-of-repeats path is the same for 1 or 2
    # round particles pack only in boxes of ~3 diameters or more: 40 voxels at 1 um, 8 um
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_solvers.py --calendering "
    "rearrange --sizes":
        {"set": {"--sizes": ["40"], "--repeats": ["1"]}},
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_solvers.py --calendering "
    "flatten --sizes":
        {"set": {"--sizes": ["16"], "--repeats": ["1"]}},
    # round particles at 40 voxels (as above); two solves per back-end in the one process
    "docs/solvers.md: OMP_NUM_THREADS=1 python tests/benchmarks/bench_solvers.py --steady 7 "
    "--calendering":
        {"set": {"--sizes": ["40"], "--steady": ["2"]}},
    "docs/solvers.md: python tests/benchmarks/bench_solvers.py --sizes 64 --params 0.8,0.2,0.0":
        {"set": {"--sizes": ["16"], "--repeats": ["1"]}},
}

#: what a page's Python leaves to its reader, made before the block (real, small)
PRELUDE = {
    "docs/cell-model.md: from kernels.cell.model import ElectrodeDesign,":
        "from kernels.metrics.volume import characterise_volume\n"
        "from kernels.structure.procedural import ManufacturingParams, generate_structure\n"
        "volume_metrics = characterise_volume(generate_structure(ManufacturingParams("
        "am_wt_frac=0.92, porosity=0.35), size_voxels=32, voxel_um=1.0, seed=0), voxel_um=1.0)\n",
    "docs/cell-model.md: Packaging4680.from_dict({\"can_wall_mm\": 0.6, \"coated_height_mm\": 56.9,":
        "from kernels.cell.geometry_4680 import Packaging4680\n",
    "docs/microstructure.md: from kernels.metrics.solvers import solve":
        "conductivity = (volume == 0).astype('float64')   # the pore phase of the page's volume\n",
    "docs/solvers.md: from kernels.metrics.solvers import solve":
        "from kernels.structure.procedural import ManufacturingParams, generate_structure\n"
        "conductivity = (generate_structure(ManufacturingParams(am_wt_frac=0.92, porosity=0.35),"
        " size_voxels=32, voxel_um=1.0, seed=0) == 0).astype('float64')\n",
}
#: replacements that make a long block small (each must match the page's text)
SCALED_PYTHON = {
    "docs/generator.md: from kernels.generator.model import sample,":
        [("n=4, size=128", "n=1, size=32")],
    "docs/microstructure.md: from kernels.structure.procedural import ManufacturingParams,":
        [("size_voxels=128", "size_voxels=32")],
    "docs/jobs.md: from jobs.evaluate import evaluate":
        [('"cube_voxels": 64, "mpi_ranks": 2', '"cube_voxels": 24, "mpi_ranks": 1'),
         ('"ragone_powers_W": [5, 20, 80]', '"ragone_powers_W": [5]')],
}


def _block_key(page: str, body: str) -> str:
    first = next((line for line in body.splitlines() if line.strip()), "")
    return f"{page}: {' '.join(first.split()[:4])}"


def test_the_blocks_are_found_and_each_has_a_kind():
    """The extraction itself (a broken regex finds nothing), and no block of a language this
    test does not know (add its rule here)."""
    kinds = [kind for kind, *_ in BLOCKS]
    unknown = [f"{page}:{first}" for kind, page, first, _ in BLOCKS if kind == "unknown"]
    assert not unknown, f"fenced blocks of a language with no rule: {unknown}"
    assert kinds.count("python") >= 10 and kinds.count("commands") >= 20
    assert kinds.count("prose") >= 5 and kinds.count("toml") >= 3
    assert any(line.key.startswith("docs/optimisers.md: pip install") for line in COMMAND_LINES)


def _is_assignment(line: CommandLine) -> bool:
    return all(ASSIGNMENT.match(t) or t == "export" for t in line.tokens)


def test_every_command_line_has_a_rule():
    """Each non-`microloop` command line is an assignment, runs scaled down, or is exempt with
    its reason; and no rule is left for a line that is gone."""
    keys = [line.key for line in COMMAND_LINES]
    missing = [f"{line.page}:{line.line_number}: {line.text}\n  key {line.key!r}"
               for line in COMMAND_LINES if not _is_assignment(line)
               and line.key not in EXEMPT and line.key not in SCALED_SHELL]
    assert not missing, ("command lines with no rule (add to SCALED_SHELL or EXEMPT):\n"
                         + "\n".join(missing))
    stale = sorted((set(EXEMPT) | set(SCALED_SHELL)) - set(keys))
    assert not stale, f"rules for lines no page has: {stale}"
    assert len(keys) == len(set(keys)), "two lines share a key: lengthen the key"
    blocks = {_block_key(page, body) for kind, page, _f, body in BLOCKS if kind == "python"}
    stale = sorted((set(PRELUDE) | set(SCALED_PYTHON)) - blocks)
    assert not stale, f"rules for Python blocks no page has: {stale}"


def test_every_exemption_says_a_category_and_names_a_test_or_why():
    for key, reason in EXEMPT.items():
        category = reason.split(":")[0]
        assert category in {"install", "SLURM", "SLURM and a GPU", "GPU", "cost"}, key
        for named in re.findall(r"tests/[\w/]+\.py", reason):
            assert (REPO / named).is_file(), (key, named)


def test_assignment_lines_are_shell_and_name_real_paths():
    """`export X=1 Y=2`, `D=tests/data/ecker2015`: valid for bash; a path value exists."""
    for line in COMMAND_LINES:
        if not _is_assignment(line):
            continue
        check = subprocess.run(["bash", "-n", "-c", line.text], capture_output=True, text=True)
        assert check.returncode == 0, (line.key, check.stderr)
        for token in line.tokens:
            value = token.partition("=")[2]
            if "/" in value:
                assert (REPO / value).exists(), f"{line.page}:{line.line_number}: {value}"


PYTHON_PAGES = sorted({page for kind, page, *_ in BLOCKS if kind == "python"})


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """A page's Python blocks in order, in one namespace, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for kind, name, first, body in BLOCKS:
        if kind != "python" or name != page:
            continue
        key = _block_key(name, body)
        source = body
        for old, new in SCALED_PYTHON.get(key, []):
            assert old in source, f"{name}:{first}: SCALED_PYTHON's {old!r} no longer matches"
            source = source.replace(old, new)
        try:
            code = PRELUDE.get(key, "") + _expect_documented_errors(source)
            exec(compile(code, f"{name}:{first}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{name}:{first} ({key}) fails: {error!r}")


def _expect_documented_errors(source: str) -> str:
    """A one-line statement followed by `# SomeError: message` (the page showing what a bad
    call says) must raise that error with that message: it is wrapped to check so."""
    lines = source.splitlines()
    out = []
    for i, line in enumerate(lines):
        said = re.match(r"^# (\w+(?:Error|Exception)): (.*)$", lines[i + 1]) \
            if i + 1 < len(lines) else None
        if said and line.strip() and not line.startswith((" ", "#")):
            error, message = said.groups()
            out += ["try:", f"    {line}", f"except {error} as _documented:",
                    f"    assert {message!r} in str(_documented), str(_documented)",
                    "else:", f"    raise AssertionError({(line + ' did not raise ' + error)!r})"]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _set_options(tokens: list[str], rule: dict) -> list[str]:
    """`tokens` with each option of rule['set'] (and its values, up to the next option)
    replaced by the rule's values, or added."""
    out, skip = [], False
    for token in tokens:
        if token.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", token):
            skip = token.split("=")[0] in rule["set"]
        if not skip:
            out.append(token)
    for option, values in rule["set"].items():
        out += [option, *values]
    return out


def _argv(line: CommandLine) -> tuple[dict[str, str], list[str], str | None]:
    """(environment, argv, stdout file) of a benchmark line, scaled by SCALED_SHELL."""
    tokens = _open_synopsis(line.tokens)
    env, stdout_to = {}, None
    while tokens and (ASSIGNMENT.match(tokens[0]) or tokens[0] in ("nohup", "nice")):
        word = tokens.pop(0)
        if word == "nice":
            tokens = tokens[2:] if tokens[:1] == ["-n"] else tokens
        elif word != "nohup":
            name, _, value = word.partition("=")
            env[name] = str(REPO) if value == "." else value
    if tokens and tokens[-1] == "&":
        tokens.pop()
    for redirect in ("2>", ">"):
        if redirect in tokens:
            at = tokens.index(redirect)
            if redirect == ">":
                stdout_to = tokens[at + 1]
            del tokens[at:at + 2]
    program, script, *args = tokens
    assert Path(program).name.startswith("python") and script.startswith("tests/"), line.key
    return env, [sys.executable, str(REPO / script),
                 *_set_options(args, SCALED_SHELL[line.key])], stdout_to


SCALED_LINES = [line for line in COMMAND_LINES if line.key in SCALED_SHELL]


def _run_line(line: CommandLine, folder: Path) -> None:
    env, argv, stdout_to = _argv(line)
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYBAMM_DISABLE_TELEMETRY": "true",
               "MPLBACKEND": "Agg", **env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=folder, env=run_env, capture_output=True, text=True,
                          timeout=800)
    assert done.returncode == 0, (f"{line.page}:{line.line_number}: {line.text}\n  ran as "
                                  f"{argv[1:]}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    if stdout_to:
        (folder / stdout_to).write_text(done.stdout)


def _run_microloop_first(page: str, written: str, folder: Path) -> None:
    """The page's `microloop` example that writes what a line reads, scaled down, after the
    files the page copied before it (`microloop campaigns copy ...`)."""
    [example] = [e for e in EXAMPLES if e.where.startswith(page + ":") and written in e.written]
    args = scaled_down(example)
    assert args is not None, example.where
    copies = [list(e.args) for e in EXAMPLES if e.where.startswith(page + ":")
              and e.args[:2] == ("campaigns", "copy")]
    old = Path.cwd()
    os.chdir(folder)
    try:
        for run in [*copies, args]:
            made = CliRunner().invoke(app, run)
            assert made.exit_code == 0, (run, made.output)
    finally:
        os.chdir(old)


@pytest.mark.slow
@pytest.mark.parametrize("line", SCALED_LINES, ids=lambda line: line.key)
def test_benchmark_lines_run_scaled_down(line, tmp_path):
    """A benchmark line with its options made small, in a fresh folder; a line reading what
    an earlier line or `microloop` example of its page writes runs after that one."""
    rule = SCALED_SHELL[line.key]
    if "after_microloop" in rule:
        _run_microloop_first(line.page, rule["after_microloop"], tmp_path)
    if "after_line" in rule:
        [before] = [other for other in COMMAND_LINES if other.key == rule["after_line"]]
        _run_line(before, tmp_path)
    _run_line(line, tmp_path)
