"""The conditional generative model: network, sampling, training step, envelope, shipped weights."""
