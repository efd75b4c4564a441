"""Predict the emergence-curve parameters of a planned architecture from its spec."""

__all__: list[str] = []
