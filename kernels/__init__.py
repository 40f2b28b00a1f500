"""kernels: the physics and the models, pure functions of (inputs, seed). Imports nothing of jobs, bayes or hpc; touches no files."""
