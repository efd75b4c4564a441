"""Fit the emergence curve of massive activations (paper Eq. 9) to measured trajectories."""

from fitting.curves import emergence, t_peak
from fitting.errors import UserError

__all__ = ["UserError", "emergence", "t_peak"]
