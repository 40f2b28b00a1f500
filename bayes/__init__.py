"""bayes: search spaces and ask/tell optimisers. Knows nothing of batteries or clusters."""

from bayes.optimizer import BACKENDS, Optimizer, make_optimizer, optimizer_from_state
from bayes.space import Space

__all__ = ["BACKENDS", "Optimizer", "Space", "make_optimizer", "optimizer_from_state"]
