"""The evaluation contract: what an evaluation is asked (`spec`) and what it answers (`result`),
typed and versioned, with every physical range taken from kernels (kernels.cell.ranges).
`jobs` and `hpc` both import it; nothing else defines these shapes."""
