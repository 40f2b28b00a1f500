"""jobs: units of work (typed inputs -> kernels -> campaign store), one node's parallelism (MPI ranks, a Dask client)."""
