"""The campaign folder's symlink policy (docs/trust.md): nothing microloop reads or writes in a
campaign folder may lead out of it through a symlink.

Why: a campaign folder is shared (a group project directory, a copied run). A link planted
there would make `resume` overwrite the link's target (`campaign.toml`), `report` write plots
anywhere (`report/`), or zarr read and write voxels elsewhere (`voxels.zarr`). Links that stay
inside the folder are harmless and allowed; the folder itself may be a link (that is the user's
choice of where it lives).
"""

from __future__ import annotations

from pathlib import Path

from hpc.campaign.folder import (
    FROZEN_CONFIG,
    JOBS_FOLDER,
    JOURNAL_NAME,
    LOCK_NAME,
    OPTIMIZER_STATE,
    REPORT_FOLDER,
    STORE_NAME,
    TRIALS_NAME,
)
from jobs.store import OutsideFolderError, resolve_inside

#: Every entry of the layout that microloop opens (absent ones are fine).
CHECKED_ENTRIES = (FROZEN_CONFIG, JOURNAL_NAME, OPTIMIZER_STATE, TRIALS_NAME, LOCK_NAME,
                   JOBS_FOLDER, REPORT_FOLDER, STORE_NAME, "trials", "dask")

__all__ = ["CHECKED_ENTRIES", "OutsideFolderError", "check_campaign_folder", "inside_folder"]


def inside_folder(directory: str | Path, relative: str | Path) -> Path:
    """`directory/relative`, refused (OutsideFolderError) when a link takes it outside."""
    return resolve_inside(directory, Path(directory) / relative, f"{relative}:")


def check_campaign_folder(directory: str | Path) -> None:
    """Refuse a campaign folder any of whose layout entries links out of it (OutsideFolderError,
    a ValueError naming the entry, where it leads and the fix)."""
    for name in CHECKED_ENTRIES:
        path = Path(directory) / name
        if path.is_symlink() or path.exists():
            inside_folder(directory, name)
