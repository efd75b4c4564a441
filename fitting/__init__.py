"""Fit the emergence curve of massive activations (paper Eq. 9) to measured trajectories.

`fitting.curves` holds the curves, `fitting.model` their lmfit models, `fitting.table` the fits of a whole
measurements table; `fitting.contracts` and `fitting.errors` are the vocabulary every package shares. Nothing
heavy is imported here, since every package imports this one (scipy and lmfit load with the modules using them).
"""

from fitting.errors import UserError

__all__ = ["UserError"]
