"""Walk a model's training checkpoints and measure the massive activations of every layer."""

__all__: list[str] = []
