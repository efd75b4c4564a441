"""Predict the emergence-curve parameters of a planned architecture from its spec."""

from fitting.contracts import Architecture, from_config, from_spec
from predictors.predict import predict_architecture
from predictors.regressors import EmergencePredictor
from predictors.trained import load, save, train

__all__ = [
    "Architecture",
    "EmergencePredictor",
    "from_config",
    "from_spec",
    "load",
    "predict_architecture",
    "save",
    "train",
]
