"""bayes: search spaces and ask/tell optimisers. Knows nothing of batteries or clusters."""
