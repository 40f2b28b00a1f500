"""Which microloop wrote a file: the installed distribution's version, for provenance records.

The distribution is `microloop-electrodes` (the command stays `microloop`): asking the metadata
for a distribution called `microloop` would find an unrelated PyPI project, or nothing."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "microloop-electrodes"


def package_version() -> str | None:
    """The installed version, or None when microloop runs from a source tree not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None
