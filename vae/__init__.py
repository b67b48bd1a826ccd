"""vae: variational autoencoders for anomaly detection, in pure PyTorch + NumPy (no Ray, no MLflow)."""

from .config import (
    ConfigError,
    DataLayout,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    ScoreConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from .detector import Detector
from .engine import EarlyStopping, EpochStats, evaluate, format_epoch, train_epoch
from .images import ImageError, ImagePreprocessor
from .model import VAE, DiagonalGaussian, VAEOutput
from .objectives import LossParts, compute_loss, elbo, iwae, kl_weight
from .persistence import load_detector, preprocessor_from_dict, save_detector
from .preprocessing import Preprocessor
from .scoring import (
    RowScores,
    calibrate_threshold,
    importance_sampled_nll,
    negative_elbo,
    reconstruction_error,
    score_array,
)
from .training import FitResult, fit

__all__ = [
    "VAE", "ConfigError", "DataLayout", "Detector", "DiagonalGaussian", "EarlyStopping", "EpochStats",
    "FeatureBlock", "FitResult", "ImageError", "ImagePreprocessor", "LossParts", "ModelConfig", "ObjectiveConfig",
    "Preprocessor", "RowScores", "ScoreConfig", "TrainConfig", "VAEOutput", "calibrate_threshold", "compute_loss",
    "elbo", "evaluate", "fit", "format_epoch", "from_dict", "importance_sampled_nll", "iwae", "kl_weight",
    "load_detector", "negative_elbo", "preprocessor_from_dict", "reconstruction_error", "save_detector",
    "score_array", "to_dict", "train_epoch",
]  # fmt: skip
