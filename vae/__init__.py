"""vae: variational autoencoders for anomaly detection, in pure PyTorch + NumPy (no Ray, no MLflow)."""

from .adversarial import Adversary, Discriminator
from .config import (
    DataLayout,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    ScoreConfig,
    TrainConfig,
    check_score_kind,
    check_variant,
)
from .config_base import ConfigError, from_dict, to_dict
from .detector import Calibration, Detector
from .engine import EarlyStopping, EpochStats, epoch_metrics, evaluate, format_epoch, train_epoch
from .estimator import AnomalyDetector
from .flows import InverseAutoregressiveFlow
from .images import ImageError, ImagePreprocessor
from .model import VAE, DiagonalGaussian, FlowPosterior, VAEOutput
from .objectives import LossParts, adversarial_autoencoder, compute_loss, elbo, iwae, kl_warmup_done, kl_weight
from .persistence import load_detector, preprocessor_from_dict, save_detector
from .preprocessing import Preprocessor
from .scoring import (
    RowScores,
    calibrate_threshold,
    importance_sampled_nll,
    negative_elbo,
    reconstruction_error,
    samples_per_chunk,
    score_rows,
)
from .training import FitResult, build_optimizer, fit, param_groups

__all__ = [
    "VAE", "Adversary", "AnomalyDetector", "Calibration", "ConfigError", "DataLayout", "Detector", "DiagonalGaussian",
    "Discriminator", "EarlyStopping", "EpochStats", "FeatureBlock", "FitResult", "FlowPosterior", "ImageError",
    "ImagePreprocessor",
    "InverseAutoregressiveFlow", "LossParts", "ModelConfig", "ObjectiveConfig", "Preprocessor", "RowScores",
    "ScoreConfig", "TrainConfig", "VAEOutput", "adversarial_autoencoder", "build_optimizer", "calibrate_threshold",
    "check_score_kind", "check_variant", "compute_loss", "elbo", "epoch_metrics", "evaluate", "fit", "format_epoch",
    "from_dict", "importance_sampled_nll", "iwae", "kl_warmup_done", "kl_weight", "load_detector", "negative_elbo",
    "param_groups", "preprocessor_from_dict", "reconstruction_error", "samples_per_chunk", "save_detector",
    "score_rows", "to_dict", "train_epoch",
]  # fmt: skip
