"""What makes a training run the same run: re-running a `run.name` resumes it only with the config it was started
with (the fields a resume may change aside), and a run that already registered its model with this very config
is done. Pure functions over the run's MLflow params (its config, flattened, first values) and tags."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from vae import ConfigError

CHOSEN_PARAM = "chosen_from_data"  # the MLflow param naming the config keys whose values the data decided
CHANGES_TAG = "vae.resumed_with"  # JSON {key: value} of the values a `--resume-changed` resume brought in
CONFIG_HASH_TAG = "vae.registered_config"  # the hash of the config the run's registered model was trained with
RUNTIME_KEYS = ("run.max_failures", "run.ray_address", "run.local_cpus", "run.checkpoints_to_keep",
                "run.resume_changed", "tune.max_concurrent_trials")  # fmt: skip
RUNTIME_PREFIXES = ("tracking.",)  # where and how the run happens, not what it trains
RESUMABLE_KEYS = ("train.epochs", *RUNTIME_KEYS)  # a resume may train more (or fewer) epochs


def _runtime(key: str) -> bool:
    return key in RUNTIME_KEYS or key.startswith(RUNTIME_PREFIXES)


def config_changes(params: Mapping[str, str], tags: Mapping[str, str], current: Mapping[str, str]) -> dict:
    """{key: (was, now)} for each config field (dotted, as a string) whose value differs between an existing run
    (its `params` and `tags`) and the `current` config's params, the RESUMABLE_KEYS and tracking fields aside.

    A field the data decided in the run (listed in its CHOSEN_PARAM) and still "auto" now is the same field; set to
    a value now, it is compared with the value the data chose then."""
    reference = {**params, **json.loads(tags.get(CHANGES_TAG, "{}"))}
    chosen = set(reference.get(CHOSEN_PARAM, "").split(",")) - {""}
    explicit = set(reference) - chosen - {CHOSEN_PARAM}
    changes = {}
    for key in sorted(set(current) | explicit):
        if key in RESUMABLE_KEYS or _runtime(key) or (key in chosen and key not in current):
            continue
        was, now = reference.get(key, "(unset)"), current.get(key, "auto")
        if was != now:
            changes[key] = (was, now)
    return changes


def config_hash(current: Mapping[str, str]) -> str:
    """A stable hash of what a run trains: the config's params less the runtime fields (train.epochs counts)."""
    kept = {k: v for k, v in sorted(current.items()) if not _runtime(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def describe(changes: Mapping[str, tuple[str, str]]) -> str:
    """e.g. "train.lr 0.005 -> 0.01, model.latent_dim 4 -> 8"."""
    return ", ".join(f"{key} {was} -> {now}" for key, (was, now) in changes.items())


@dataclass(frozen=True)
class ChangedResume:
    """What a `--resume-changed` resume brings in: the changes, and the CHANGES_TAG that records them over the
    values of earlier changed resumes (so the next comparison starts from the config the run now trains)."""

    changes: dict[str, tuple[str, str]]
    tags: dict[str, str]

    @property
    def message(self) -> str:
        return f"resuming with a changed config (--resume-changed): {describe(self.changes)}"


def allowed_changes(
    params: Mapping[str, str], tags: Mapping[str, str], current: Mapping[str, str], field: str, name: str,
    resume_changed: bool,
) -> ChangedResume | None:  # fmt: skip
    """None when an existing run (its `params` and `tags`) has the `current` config (`config_changes`), the changes
    when `resume_changed` allows them; otherwise ConfigError naming `field`, the run's name and each change. A change
    of the architecture (`model.*`) is refused even with `resume_changed`."""
    changes = config_changes(params, tags, current)
    if not changes:
        return None
    architecture = [key for key in changes if key.startswith("model.")]
    if resume_changed and not architecture:
        values = {**json.loads(tags.get(CHANGES_TAG, "{}")), **{key: now for key, (_, now) in changes.items()}}
        return ChangedResume(changes, {CHANGES_TAG: json.dumps(values)})
    advice = (
        "its checkpoints hold another architecture: use a new name"
        if architecture
        else f"use a new {field}, or --resume-changed to go on from its checkpoints with the new values"
    )
    raise ConfigError(f"{field}: run {name!r} exists with another config ({describe(changes)}); {advice}")
