"""Transport solvers behind one `solve()` entry: one back-end per module."""
