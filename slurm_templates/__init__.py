"""sbatch templates rendered by `microloop submit` and the convergence study."""
