"""The campaign folder's layout: the one module that names its files.

```
<campaign>/campaign.toml   the frozen config          journal.jsonl  append-only trial events
           trials.csv      one row per evaluation     voxels.zarr/   one group per design
           trials/<id>/    spec, metrics, result      jobs/          executor logs
           report/         plots + summary            optimizer_state.json
```
"""

from __future__ import annotations

from jobs.store import STORE_NAME

FROZEN_CONFIG = "campaign.toml"
OPTIMIZER_STATE = "optimizer_state.json"
JOURNAL_NAME = "journal.jsonl"
TRIALS_NAME = "trials.csv"
JOBS_FOLDER = "jobs"
REPORT_FOLDER = "report"
LOCK_NAME = ".controller.lock"
#: the report's summary.json as exported case-study data keep it beside trials.csv (no report/)
TABLE_SUMMARY_NAME = "report_summary.json"

__all__ = ["FROZEN_CONFIG", "JOBS_FOLDER", "JOURNAL_NAME", "LOCK_NAME", "OPTIMIZER_STATE",
           "REPORT_FOLDER", "STORE_NAME", "TABLE_SUMMARY_NAME", "TRIALS_NAME"]
