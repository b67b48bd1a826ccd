"""Save and load a Detector as plain files: `weights.pt` (a state_dict) and `detector.json`.

Loading uses `torch.load(weights_only=True)`: no pickled Python objects, only tensors.
Format 2 stores the threshold with the score configuration it was calibrated on (and the reference
contributions); format 1 files still load: their threshold was calibrated on their saved score configuration,
and their Gaussian scales are converted to the smooth floor's parameter (see `GaussianBlock`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import DataLayout, ModelConfig, ObjectiveConfig, ScoreConfig
from .config_base import from_dict, to_dict
from .detector import Calibration, Detector
from .images import ImagePreprocessor
from .model import VAE
from .preprocessing import Preprocessor

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "detector.json"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, FORMAT_VERSION)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a file beside `path`, then moved over it: a reader sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def detector_spec(detector: Detector) -> dict[str, Any]:
    """Everything but the weights, as a JSON-ready mapping."""
    return {
        "format_version": FORMAT_VERSION,
        "model_config": to_dict(detector.model.config),
        "layout": to_dict(detector.model.layout),
        "score_config": to_dict(detector.score_config),
        "objective_config": to_dict(detector.objective),
        "calibration": _calibration_spec(detector.calibration),
        "preprocessor": detector.preprocessor.to_dict(),
        "condition": None if detector.condition is None else detector.condition.to_dict(),
        "metadata": detector.metadata,
        "seed": detector.seed,
    }


def _calibration_spec(calibration: Calibration | None) -> dict[str, Any] | None:
    if calibration is None:
        return None
    reference = None if calibration.reference is None else list(calibration.reference)
    return {"threshold": calibration.threshold, "score_config": to_dict(calibration.score), "reference": reference}


def _calibration(spec: dict[str, Any], score: ScoreConfig) -> Calibration | None:
    """The calibration of a format 2 spec; of a format 1 spec, its bare threshold bound to its score config."""
    if spec["format_version"] == 1:
        return None if spec["threshold"] is None else Calibration(spec["threshold"], score)
    data = spec["calibration"]
    if data is None:
        return None
    reference = None if data["reference"] is None else tuple(data["reference"])
    return Calibration(data["threshold"], from_dict(ScoreConfig, data["score_config"]), reference)


def _upgrade_v1_weights(state: dict[str, torch.Tensor], min_scale: float) -> dict[str, torch.Tensor]:
    """Format 1 stored each Gaussian block's log std, clamped at log(min_scale); format 2 stores log(std -
    min_scale). The std is kept, except that one at the floor becomes min_scale * (1 + 1e-4)."""
    for name, value in state.items():
        if name.startswith("likelihood.blocks.") and name.endswith(".log_scale"):
            std = value.clamp(min=math.log(min_scale)).exp()
            state[name] = (std - min_scale).clamp(min=1e-4 * min_scale).log()
    return state


def preprocessor_from_dict(data: dict[str, Any]) -> Preprocessor | ImagePreprocessor:
    """Rebuild either preprocessor from its `to_dict()` output (images carry `"kind": "image"`)."""
    if data.get("kind") == ImagePreprocessor.kind:
        return ImagePreprocessor.from_dict(data)
    return Preprocessor.from_dict(data)


def save_detector(detector: Detector, directory: str | os.PathLike) -> Path:
    """Write the detector into `directory` (created if needed); each file is replaced atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in detector.model.state_dict().items()}
    write_atomically(directory / WEIGHTS_FILE, lambda p: torch.save(state, p))
    text = json.dumps(detector_spec(detector), indent=2)
    write_atomically(directory / SPEC_FILE, lambda p: p.write_text(text))
    return directory


def load_detector(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Detector:
    """Rebuild a saved detector; raises FileNotFoundError naming the missing file."""
    directory = Path(directory)
    for name in (SPEC_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no saved detector in {directory}: {name} is missing")
    spec = json.loads((directory / SPEC_FILE).read_text())
    version = spec.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise ValueError(f"{directory / SPEC_FILE}: format_version {version}, expected one of {_READABLE_VERSIONS}")
    config = from_dict(ModelConfig, spec["model_config"])
    model = VAE(config, from_dict(DataLayout, spec["layout"]))
    state = torch.load(directory / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(_upgrade_v1_weights(state, config.gaussian_min_scale) if version == 1 else state)
    model.to(map_location).eval()
    condition = spec["condition"]
    score = from_dict(ScoreConfig, spec["score_config"])
    return Detector(
        model=model,
        preprocessor=preprocessor_from_dict(spec["preprocessor"]),
        score_config=score,
        calibration=_calibration(spec, score),
        condition=None if condition is None else Preprocessor.from_dict(condition),
        metadata=spec["metadata"],
        objective=from_dict(ObjectiveConfig, spec.get("objective_config")),  # absent in files saved before variants
        seed=spec.get("seed", 0),  # absent in files saved before the seed was kept: they scored with 0
    )
