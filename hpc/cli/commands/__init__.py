"""Sub-commands of `microloop`: one module each, exposing `register(app)`."""
