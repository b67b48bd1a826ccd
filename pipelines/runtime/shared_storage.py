"""On a Ray cluster of several nodes every write task and worker must see the same storage: a local path that some
node cannot see is refused before any work (each node would write to its own disk and rows would go missing)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines.settings.yaml_configs import resolve_path
from pipelines.storage import filesystems
from vae import ConfigError

ADVICE = "use a path on a mount every node shares (e.g. /mnt/cluster_storage/...) or a URI (s3://...)"


def require_shared(location: str, field: str) -> None:
    """Raise ConfigError naming `field` when the connected Ray has more than one alive node and `location` (the
    config value, as given) is a local path that is relative or that a probe task on some node cannot see.

    A relative path resolves against the driver's project directory, on `ray job submit` the job's unpacked
    copy on one node. A URI, and any path on a one-node Ray, pass unchecked. The probe writes one empty file in
    `location` (which must exist: `filesystems.check_writable` creates it) and deletes it afterwards.
    """
    if filesystems.is_remote(location):
        return
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2:
        return
    path = location.removeprefix("file://")
    if not Path(path).expanduser().is_absolute():
        raise ConfigError(f"{field}: {location!r} is a relative path, which on a cluster of {len(nodes)} nodes "
                          f"resolves inside the driver's working directory on one node; {ADVICE}")  # fmt: skip
    blind = _nodes_not_seeing(Path(resolve_path(path)), nodes)
    if blind:
        raise ConfigError(f"{field}: {location!r} is local to the driver's node: {len(blind)} of the cluster's "
                          f"{len(nodes)} nodes (e.g. {blind[0]}) do not see it; {ADVICE}")  # fmt: skip


def _nodes_not_seeing(directory: Path, nodes: list[dict]) -> list[str]:
    """The addresses of `nodes` on which a file the driver writes in `directory` does not exist."""
    marker = directory / f".shared-check-{uuid.uuid4().hex}"
    marker.touch()
    try:
        exists = ray.remote(num_cpus=0)(os.path.exists)
        seen = ray.get([
            exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(str(marker))
            for node in nodes
        ])  # fmt: skip
    finally:
        marker.unlink()
    return [node["NodeManagerAddress"] for node, ok in zip(nodes, seen, strict=True) if not ok]
