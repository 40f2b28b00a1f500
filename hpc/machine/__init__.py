"""The machine room: executors (local, SLURM), the Dask pool, the job a worker runs, self-checks."""
