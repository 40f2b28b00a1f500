"""Every `microloop ...` example in README.md and docs/*.md parses, and the cheap ones run.

Examples come from fenced ```bash / ```console blocks (one logical line each, `\\` continued,
`$ ` prompts and `# comments` dropped, `[optional]` brackets opened, `a|b` alternatives taken
at their first choice, `...` dropped). Each is parsed by the real command (click's own parser
and typer's type conversions, the command body not run): an unknown option, a missing value or
an extra argument fails here. The cheap ones then run in a temporary folder, in page order, so a
page's later example can read what an earlier one wrote; input volumes and metrics files a page
names without making them are generated first (small procedural volumes). Examples too costly
for CI are parsed only, with the reason in EXPENSIVE. Synopses (fenced blocks without a language)
and inline `microloop ...` spans must name real commands and options.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hpc.cli.app import app

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE_LANGUAGES = {"bash", "console", "sh", "shell"}
SYNOPSIS_LANGUAGES = {"", "text"}

#: sub-commands whose examples are parsed but not run in CI, and why
EXPENSIVE = {
    "run": "a whole campaign: minutes (quick) to hours (case studies)",
    "resume": "continues a campaign folder that only a finished `run` leaves",
    "status": "reads a campaign folder that only `run` writes",
    "report": "reads a finished campaign folder",
    "submit": "submits the controller to SLURM (tests/test_campaign_slurm.py covers it)",
    "case-study": "several campaigns: hours (tests/test_case_study_seeds.py runs the page's "
                  "smoke commands, tests/test_case_studies.py a reduced cs3)",
    "convergence": "hundreds of cube solves: minutes (tests/test_convergence.py runs a small study)",
    "train-generator": "trains the network: minutes to hours (tests/test_train.py runs 2 steps)",
    "calibrate": "needs measured discharge files and 30+ DFN solves (tests/test_calibration.py)",
    "doctor": "submits jobs and starts MPI ranks and Dask workers (tests/test_machine_room.py)",
}
#: single examples, by an argument they name, parsed but not run, and why
NEEDS_A_CAMPAIGN = {"runs/c1/voxels.zarr/trial_3/vol": "a campaign's voxel store (from `run`)"}
#: largest generated volume edge run in CI (the pages' 128^3 takes ~1 s per volume)
MAX_RUN_SIZE = 128


@dataclass(frozen=True)
class Example:
    """One `microloop` command of a page: where it is, as written, and its argument list."""

    where: str
    written: str
    args: tuple[str, ...]
    stdout_to: str | None = None


def _logical_lines(body: str, synopsis: bool = False) -> list[tuple[int, str]]:
    """Lines continued by `\\` (and, in a synopsis, by indentation) joined, prompts dropped."""
    lines, current, start = [], "", 0
    for number, raw in enumerate(body.splitlines()):
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if synopsis and lines and raw[:1].isspace() and not current:
            lines[-1] = (lines[-1][0], f"{lines[-1][1]} {line}")
            continue
        if not current:
            start = number
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append((start, current + line))
        current = ""
    return [(n, line) for n, line in lines if line]


def _open_synopsis(tokens: list[str]) -> list[str]:
    """Drop `[` `]`, take the first of `a|b|c`, drop `...`: a synopsis as one concrete line."""
    out = []
    for token in tokens:
        token = token.strip("[]").replace("\\|", "|")
        if "|" in token and token != "|":
            token = token.split("|")[0]
        if token and token != "...":
            out.append(token)
    return out


def _commands(tokens: list[str]) -> list[tuple[list[str], str | None]]:
    """The `microloop` invocations in one shell line: (args after `microloop`, stdout file)."""
    found = []
    segment: list[str] = []
    for token in [*tokens, "&&"]:
        if token not in ("&&", ";", "||", "|"):
            segment.append(token)
            continue
        for i, word in enumerate(segment):
            if word.startswith("microloop ") or " microloop " in word:  # sbatch --wrap "..."
                inner = shlex.split(word[word.index("microloop"):], comments=True)
                found += _commands(inner)
            elif Path(word).name == "microloop":
                rest = segment[i + 1:]
                stdout_to = None
                if ">" in rest:
                    stdout_to = rest[rest.index(">") + 1]
                    rest = rest[:rest.index(">")]
                found.append((_open_synopsis(rest), stdout_to))
                break
        segment = []
        if token == "|":
            break  # what a pipe feeds is not a microloop command
    return found


def _fenced_blocks(page: Path):
    text = page.read_text()
    for match in re.finditer(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, re.S | re.M):
        yield text[:match.start()].count("\n") + 2, match.group(1), match.group(2)


def collect(languages: set[str]) -> list[Example]:
    examples = []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        for first_line, language, body in _fenced_blocks(page):
            if language not in languages or "microloop" not in body:
                continue
            for offset, line in _logical_lines(body, language in SYNOPSIS_LANGUAGES):
                if not re.search(r"(^|[\s/\"])microloop\s", line):
                    continue
                if language in SYNOPSIS_LANGUAGES and not line.startswith("microloop "):
                    continue  # a diagram that mentions the command
                for args, stdout_to in _commands(shlex.split(line, comments=True)):
                    examples.append(Example(f"{name}:{first_line + offset}", line,
                                            tuple(args), stdout_to))
    return examples


def collect_inline() -> list[Example]:
    examples = []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            for span in re.findall(r"`(microloop [^`]+)`", line):
                tokens = shlex.split(span.replace("\\|", "|"), posix=True)
                examples.append(Example(f"{name}:{number}", span,
                                        tuple(_open_synopsis(tokens[1:]))))
    return examples


EXAMPLES = collect(EXAMPLE_LANGUAGES)
SYNOPSES = collect(SYNOPSIS_LANGUAGES) + collect_inline()
ROOT = typer.main.get_command(app)


def _resolve(args: tuple[str, ...]):
    """(command path, click command, its arguments) of `microloop ARGS`."""
    rest = list(args)
    while rest and rest[0].startswith("-"):  # root options: -v, --version
        rest.pop(0)
    command, path = ROOT, []
    while rest and hasattr(command, "commands") and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return path, command, rest


def _options(command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def _check_options(example: Example) -> None:
    """A real command, known options each with its value, no argument too many.

    Values are not converted (a synopsis has placeholders such as `--porosity P`): click's
    option parser splits the line as the command would, and the leftover positionals are
    counted against the command's arguments (`--power-W 10 200` leaves one too many).
    """
    path, command, rest = _resolve(example.args)
    asks_help = bool({"-h", "--help"} & set(example.args))
    names_a_command = bool(path) and not hasattr(command, "commands")
    assert names_a_command or asks_help, \
        f"{example.where}: `microloop {' '.join(example.args)}` names no command"
    if not names_a_command:
        return
    unknown = [t for t in rest if t.startswith("-") and not _is_number(t)
               and t.split("=")[0] not in _options(command)]
    assert not unknown, f"{example.where}: {example.written}\n  unknown options {unknown}"
    parser = command.make_parser(typer.Context(command, info_name=" ".join(path)))
    try:
        _values, positionals, _order = parser.parse_args(list(rest))
    except Exception as error:  # click's NoSuchOption / BadOptionUsage
        pytest.fail(f"{example.where}: {example.written}\n  {error}")
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if all(p.nargs >= 0 for p in arguments):
        room = sum(p.nargs for p in arguments)
        assert len(positionals) <= room, (f"{example.where}: {example.written}\n  extra "
                                          f"arguments {positionals[room:]}")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse(example: Example) -> None:
    """click's parser and typer's conversions on the example, without running the command."""
    path, command, rest = _resolve(example.args)
    root = logging.getLogger()
    level = root.level
    try:
        command.make_context(" ".join(["microloop", *path]), list(rest))
    except typer.Exit as done:  # --help prints and exits
        assert done.exit_code == 0, example.where
    except Exception as error:  # click's UsageError / BadParameter: the drift this test catches
        pytest.fail(f"{example.where}: {example.written}\n  does not parse: {error}")
    finally:
        root.setLevel(level)  # `-v` in an example turns on debug logging


def _why_not_run(example: Example) -> str | None:
    path, _command, rest = _resolve(example.args)
    if any(flag in rest for flag in ("-h", "--help")):
        return None
    if not path:
        return "no sub-command"
    if path[0] == "convergence" and "--plan" in rest:
        return None   # prints the study's tasks and memory, runs nothing
    if path[0] in EXPENSIVE:
        return EXPENSIVE[path[0]]
    for argument, reason in NEEDS_A_CAMPAIGN.items():
        if argument in rest:
            return reason
    if path[0] == "generate" and "--size" in rest:
        size = int(rest[rest.index("--size") + 1])
        if size > MAX_RUN_SIZE:
            return f"--size {size} is above the {MAX_RUN_SIZE} run in CI"
    return None


def test_the_pages_have_examples_and_synopses():
    """The extraction itself: these examples must be found (a broken regex finds none)."""
    commands = {_resolve(e.args)[0][0] for e in EXAMPLES if _resolve(e.args)[0]}
    assert {"run", "campaigns", "generate", "characterise", "cell", "convergence",
            "calibrate", "case-study"} <= commands
    assert any(e.args[:2] == ("campaigns", "copy") for e in EXAMPLES)
    assert any(e.stdout_to == "metrics.json" for e in EXAMPLES)
    assert any(_resolve(e.args)[0] == ["cell"] for e in SYNOPSES)


@pytest.mark.parametrize("example", SYNOPSES, ids=lambda e: e.where)
def test_synopses_name_real_commands_and_options(example):
    _check_options(example)


SOURCE_TREE = ("docs/", "hpc/", "kernels/", "jobs/", "bayes/", "slurm_templates/")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_every_example_parses(example):
    _check_options(example)
    _parse(example)
    in_tree = [a for a in example.args if a.startswith(SOURCE_TREE)]
    assert not in_tree, (f"{example.where}: {example.written}\n  names {in_tree}, files of "
                         "the source tree that an installed package does not have (use a "
                         "built-in name: microloop campaigns list)")


def _volume(seed: int):
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    return generate_structure(ManufacturingParams(am_wt_frac=0.94, porosity=0.35),
                              size_voxels=32, voxel_um=0.5, seed=seed)


def _make_input(name: str, folder: Path) -> None:
    """A small real input for a file a page reads but does not make."""
    import numpy as np

    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".npy"):
        np.save(target, _volume(0))
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(target, _volume(1))
    else:  # a metrics file: what `characterise --json` says of a small volume
        source = folder / "_fixture_volume.npy"
        np.save(source, _volume(2))
        result = CliRunner().invoke(app, ["characterise", str(source), "--voxel-um", "0.5",
                                          "--json"])
        assert result.exit_code == 0, result.output
        target.write_text(result.stdout)


_WRITES = {"--out", "--ragone", "--plot", "--dir"}


def _inputs(example: Example) -> list[str]:
    _path, _command, rest = _resolve(example.args)
    names = []
    for i, token in enumerate(rest):
        written = i > 0 and rest[i - 1] in _WRITES
        if not written and re.fullmatch(r"[\w./-]+\.(npy|tif|tiff|json)", token):
            names.append(token)
    return names


RUN_PAGES = sorted({e.where.split(":")[0] for e in EXAMPLES if _why_not_run(e) is None})


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_cheap_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for example in EXAMPLES:
        if example.where.split(":")[0] != page or _why_not_run(example) is not None:
            continue
        for name in _inputs(example):
            if not (tmp_path / name).exists():
                _make_input(name, tmp_path)
        result = CliRunner().invoke(app, list(example.args))
        assert result.exit_code == 0, (f"{example.where}: {example.written}\n{result.output}"
                                       f"\n{result.exception!r}")
        if example.stdout_to:
            (tmp_path / example.stdout_to).write_text(result.stdout)
        if "--json" in example.args:  # what --json promises: JSON on stdout
            try:
                json.loads(result.stdout)
            except json.JSONDecodeError:  # one object on the last line (cell, calibrate)
                json.loads(result.stdout.strip().splitlines()[-1])
        ran += 1
    assert ran > 0


def test_the_examples_not_run_say_why():
    """Every command is either run somewhere in the pages or has its reason in EXPENSIVE."""
    run = {_resolve(e.args)[0][0] for e in EXAMPLES if _why_not_run(e) is None and
           _resolve(e.args)[0]}
    documented = {_resolve(e.args)[0][0] for e in EXAMPLES if _resolve(e.args)[0]}
    assert documented <= run | set(EXPENSIVE), documented - run - set(EXPENSIVE)
    assert {"campaigns", "generate", "characterise", "cell"} <= run


# ------------------------------------------------ the expensive examples, run scaled down

#: expensive examples that CI runs scaled down: `set` options are replaced or added, `drop`
#: options removed with their values; the command, its arguments and every other option stay
#: as the page writes them (an unknown or renamed option still fails here)
SCALED_DOWN = {
    "run": {"set": {"--budget": ["1"], "--executor": ["debug"]}},
    "resume": {"set": {}},
    "status": {"set": {}},
    "report": {"set": {}},
    "submit": {"set": {"--dry-run": []}},      # render the sbatch script, submit nothing
    "convergence": {"set": {"--sizes": ["16", "24"], "--cubes-per-size": ["3"],
                            "--source-voxels": ["32"], "--executor": ["local"],
                            "--tasks": ["1"], "--mpi-ranks": ["1"]},
                    "drop": ["--partition"]},
}
#: expensive examples not run even scaled down, by page and the start of the command as written
#: (not by line number: an edit above the example would move it), and the test that runs the
#: same command path instead
RUN_ELSEWHERE = {
    "docs/case-studies.md: microloop report runs/paper/": "a paper run's folder: the smoke "
                                                          "block below is run by "
                                                          "tests/test_case_study_seeds.py",
    "docs/microstructure.md: microloop characterise runs/c1/voxels.zarr/":
        "a campaign's voxel store: tests/test_formats.py characterises one a real campaign wrote",
}


def run_elsewhere(example: Example) -> str | None:
    """RUN_ELSEWHERE's reason for this example, or None."""
    page = example.where.rsplit(":", 1)[0]
    for key, reason in RUN_ELSEWHERE.items():
        key_page, _, start = key.partition(": ")
        if key_page == page and example.written.lstrip("$ ").startswith(start):
            return reason
    return None


def test_every_run_elsewhere_key_names_an_example():
    """A key whose example is gone (or was reworded) would exempt nothing, silently."""
    for key in RUN_ELSEWHERE:
        page, _, start = key.partition(": ")
        assert any(e.where.rsplit(":", 1)[0] == page and e.written.lstrip("$ ").startswith(start)
                   for e in EXAMPLES), key


#: folders a scaled-down example reads that an earlier example of its page must have made
_READS_A_FOLDER = {"resume", "status", "report"}


def _strip(command, args: list[str], names: set[str]) -> list[str]:
    """`args` without the options in `names` (and their values, for options that take one)."""
    takes_value = {opt: not getattr(p, "is_flag", False) and p.param_type_name == "option"
                   for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    out, skip = [], False
    for token in args:
        if skip:
            skip = False
            continue
        name = token.split("=")[0]
        if name in names:
            skip = takes_value.get(name, False) and "=" not in token
            continue
        out.append(token)
    return out


def scaled_down(example: Example) -> list[str] | None:
    """The example's arguments made small (SCALED_DOWN), or None when it is not run so."""
    path, command, rest = _resolve(example.args)
    if not path or path[0] not in SCALED_DOWN or run_elsewhere(example) is not None:
        return None
    rule = SCALED_DOWN[path[0]]
    args = _strip(command, rest, set(rule["set"]) | set(rule.get("drop", ())))
    for option, values in rule["set"].items():
        args += [option] if not values else [t for v in values for t in (option, v)]
    return [*path, *args]


SCALED_PAGES = sorted({e.where.split(":")[0] for e in EXAMPLES if scaled_down(e) is not None})


@pytest.mark.slow
@pytest.mark.parametrize("page", SCALED_PAGES)
def test_expensive_examples_run_scaled_down(page, tmp_path, monkeypatch):
    """A page's examples in order, in one folder: the cheap ones as written, the expensive
    ones scaled down (a campaign of one trial in-process, a study of 16^3 and 24^3 cubes, a
    submit that only renders its script), so a folder a later example reads exists."""
    monkeypatch.chdir(tmp_path)
    ran, made_here = [], set()
    for example in EXAMPLES:
        if example.where.split(":")[0] != page:
            continue
        args = scaled_down(example)
        if args is None:
            if _why_not_run(example) is not None:
                continue
            args = list(example.args)
        path, _command, rest = _resolve(tuple(args))
        folders = [a for a in rest if not a.startswith("-")]
        if path[0] in _READS_A_FOLDER and not all(Path(f).is_dir() for f in folders):
            assert run_elsewhere(example) is not None, (
                f"{example.where}: {example.written}\n  reads {folders}, which no earlier "
                "example of the page made (make it there, or say in RUN_ELSEWHERE who runs it)")
            continue
        for name in _inputs(example):
            if not (tmp_path / name).exists():
                _make_input(name, tmp_path)
        if path[0] in ("run", "submit"):  # a campaign file the page edits from a copy
            for name in folders:
                if name.endswith(".toml") and not Path(name).exists():
                    copied = CliRunner().invoke(app, ["campaigns", "copy", "quick", name])
                    assert copied.exit_code == 0, copied.output
                    made_here.add(name)
        if path == ["campaigns", "copy"]:  # the page's own copy replaces the stand-in
            for name in set(folders) & made_here:
                Path(name).unlink()
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (f"{example.where}: {example.written}\n  ran as "
                                       f"{args}\n{result.output}\n{result.exception!r}")
        if example.stdout_to:
            (tmp_path / example.stdout_to).write_text(result.stdout)
        ran.append(path[0])
    assert set(ran) & set(SCALED_DOWN), ran


def test_every_expensive_example_is_run_somewhere():
    """An expensive example is run scaled down here, or RUN_ELSEWHERE names its test, or its
    command's EXPENSIVE reason names the test that runs that command."""
    for example in EXAMPLES:
        path, _command, _rest = _resolve(example.args)
        if not path or _why_not_run(example) is None or scaled_down(example) is not None:
            continue
        reason = run_elsewhere(example) or EXPENSIVE.get(path[0], "")
        named = re.findall(r"tests/[\w/]+\.py", reason)
        assert named and all((REPO / n).is_file() for n in named), (
            f"{example.where}: {example.written}\n  neither run here nor by a named test")


#: `.md` files the pages name as what a command writes, not as files of the repository
WRITTEN_BY_COMMANDS = {"summary.md", "table.md", "quality.md", "bench.md", "alternatives.md",
                       "resolution.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_file_a_page_links_or_cites_exists(page):
    """A link (`[text](path)`) resolves from the page; a cited `NAME.md` is in the repository
    (the pages once cited a REFERENCE.md that only existed outside it)."""
    text = page.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://", "mailto:")) and \
                not (page.parent / target).exists():
            missing.append(target)
    for name in re.findall(r"(?<![\w/.-])([\w./-]+\.md)\b", text):
        if Path(name).name in WRITTEN_BY_COMMANDS:
            continue
        if not any((base / name).exists() for base in (page.parent, REPO, REPO / "docs")):
            missing.append(name)
    assert not missing, f"{page.name}: {sorted(set(missing))}"


def _toml_blocks() -> list[tuple[str, dict]]:
    import tomllib

    return [(f"{page.relative_to(REPO).as_posix()}:{first}", tomllib.loads(body))
            for page in PAGES for first, language, body in _fenced_blocks(page)
            if language == "toml"]


def test_every_campaign_and_study_file_a_page_shows_is_accepted(tmp_path):
    """The pages' TOML examples parse, and a whole campaign or study file among them is what
    the loaders accept (a `generator = "default"` the config refuses once stood in the docs).
    `[warm_start]` names folders of earlier runs, which exist only on the reader's machine."""
    import tomli_w

    from hpc.campaign.config import parse_campaign
    from hpc.campaign.convergence_config import load_convergence_file

    blocks = _toml_blocks()
    kinds = []
    for where, data in blocks:
        if "space" in data:
            data = {k: v for k, v in data.items() if k != "warm_start"}
            try:
                parse_campaign(data)
            except Exception as error:
                pytest.fail(f"{where}: the campaign example is refused: {error}")
            kinds.append("campaign")
        elif "study" in data:
            path = tmp_path / "study.toml"
            path.write_text(tomli_w.dumps(data))
            try:
                load_convergence_file(path)
            except Exception as error:
                pytest.fail(f"{where}: the study example is refused: {error}")
            kinds.append("study")
    assert {"campaign", "study"} <= set(kinds), blocks
