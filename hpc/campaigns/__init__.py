"""Built-in campaign files (quick, cs1, cs2, cs3)."""
