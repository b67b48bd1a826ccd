"""vae: variational autoencoders for anomaly detection, in pure PyTorch + NumPy (no Ray, no MLflow).

The names below are imported from their modules on first use (PEP 562), so a process that only needs the
preprocessing or the configs (a Ray Data task computing column statistics) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "adversarial": ["Adversary", "Discriminator"],
    "config": [
        "DataLayout",
        "FeatureBlock",
        "ModelConfig",
        "ObjectiveConfig",
        "ScoreConfig",
        "TrainConfig",
        "check_score_kind",
        "check_variant",
    ],
    "config_base": ["ConfigError", "from_dict", "to_dict"],
    "detector": ["Calibration", "Detector"],
    "engine": ["EarlyStopping", "EpochStats", "epoch_metrics", "evaluate", "format_epoch", "train_epoch"],
    "estimator": ["AnomalyDetector"],
    "flows": ["InverseAutoregressiveFlow"],
    "images": ["ImageError", "ImagePreprocessor"],
    "model": ["VAE", "DiagonalGaussian", "FlowPosterior", "VAEOutput"],
    "objectives": [
        "LossParts",
        "adversarial_autoencoder",
        "compute_loss",
        "elbo",
        "iwae",
        "kl_warmup_done",
        "kl_weight",
    ],
    "persistence": ["load_detector", "preprocessor_from_dict", "save_detector"],
    "preprocessing": ["Preprocessor"],
    "scoring": [
        "RowScores",
        "calibrate_threshold",
        "importance_sampled_nll",
        "negative_elbo",
        "reconstruction_error",
        "samples_per_chunk",
        "score_rows",
        "typical_contributions",
    ],
    "selection": ["Choice", "choose_over_reference", "row_hashes"],
    "training": ["FitResult", "build_optimizer", "fit", "param_groups"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
