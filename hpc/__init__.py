"""hpc: configuration, executors (submitit/SLURM), the Dask cluster, the campaign controller, the CLI and reports."""
