"""The machine room: the executor over one `Scheduler` protocol (scheduler/: local, SLURM,
debug), the Dask pool, the job a worker runs, the controller job's wrapper, self-checks."""
