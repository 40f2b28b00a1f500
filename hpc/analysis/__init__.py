"""Reading finished campaigns: the report, the case studies, plots."""
