"""The built-in campaign and study files, and their index.

Every ``*.toml`` in this package is a built-in, reachable by its file name without ``.toml``
(``microloop run cs1_3C``, ``microloop campaigns show convergence``) from any install, editable or
not. The index is read from the files themselves, so adding a file is all it takes to ship one:
a file with a ``[study]`` table is a convergence-study file (``microloop convergence``), any other
a campaign file whose ``description`` key is its one-line summary. Reading goes through
``importlib.resources``, which also works from a wheel.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Literal

BuiltinKind = Literal["campaign", "convergence study"]


@dataclass(frozen=True)
class BuiltinFile:
    """One shipped file: its name, what it is for, its one-line description and its text."""

    name: str
    kind: BuiltinKind
    description: str
    text: str


def _describe(name: str, text: str) -> BuiltinFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:  # a shipped file must parse: a packaging bug
        raise ValueError(f"built-in file {name}.toml is not valid TOML: {error}") from None
    if "study" in data:
        # a study file has no description key (its schema is strict): its first comment line
        comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
        return BuiltinFile(name, "convergence study", comments[0] if comments else "", text)
    return BuiltinFile(name, "campaign", str(data.get("description", "")), text)


def builtin_files() -> dict[str, BuiltinFile]:
    """All shipped files by name, sorted by name."""
    root = resources.files(__name__)
    found = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml") and entry.is_file():
            name = entry.name.removesuffix(".toml")
            found[name] = _describe(name, entry.read_text(encoding="utf-8"))
    return found


def builtin_names(kind: BuiltinKind | None = None) -> tuple[str, ...]:
    """The names of the shipped files, of one kind or all."""
    return tuple(n for n, f in builtin_files().items() if kind is None or f.kind == kind)


def builtin_file(name: str) -> BuiltinFile:
    """One shipped file by name; an unknown name lists the accepted ones (ValueError)."""
    files = builtin_files()
    if name not in files:
        raise ValueError(f"no built-in campaign or study named {name!r}; accepted: "
                       f"{', '.join(files)}")
    return files[name]
