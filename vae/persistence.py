"""Save and load a Detector as plain files: `weights.pt` (a state_dict) and `detector.json`.

Loading uses `torch.load(weights_only=True)`: no pickled Python objects, only tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import DataLayout, ModelConfig, ObjectiveConfig, ScoreConfig, from_dict, to_dict
from .detector import Detector
from .images import ImagePreprocessor
from .model import VAE
from .preprocessing import Preprocessor

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "detector.json"
FORMAT_VERSION = 1


def _write_atomically(path: Path, write) -> None:
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
        "threshold": detector.threshold,
        "preprocessor": detector.preprocessor.to_dict(),
        "condition": None if detector.condition is None else detector.condition.to_dict(),
        "metadata": detector.metadata,
    }


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
    _write_atomically(directory / WEIGHTS_FILE, lambda p: torch.save(state, p))
    text = json.dumps(detector_spec(detector), indent=2)
    _write_atomically(directory / SPEC_FILE, lambda p: p.write_text(text))
    return directory


def load_detector(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Detector:
    """Rebuild a saved detector; raises FileNotFoundError naming the missing file."""
    directory = Path(directory)
    for name in (SPEC_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no saved detector in {directory}: {name} is missing")
    spec = json.loads((directory / SPEC_FILE).read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory / SPEC_FILE}: format_version {spec.get('format_version')}, expected {FORMAT_VERSION}"
        )
    model = VAE(from_dict(ModelConfig, spec["model_config"]), from_dict(DataLayout, spec["layout"]))
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location=map_location, weights_only=True))
    model.to(map_location).eval()
    condition = spec["condition"]
    return Detector(
        model=model,
        preprocessor=preprocessor_from_dict(spec["preprocessor"]),
        score_config=from_dict(ScoreConfig, spec["score_config"]),
        threshold=spec["threshold"],
        condition=None if condition is None else Preprocessor.from_dict(condition),
        metadata=spec["metadata"],
        objective=from_dict(ObjectiveConfig, spec.get("objective_config")),  # absent in files saved before variants
    )
