"""Resource preflight: refuse, before anything waits, a request that the Ray cluster can never place.

Ray queues a request that no node can satisfy and Tune warns about it every few minutes, forever: a trial asking
for a GPU on a laptop, or 2 workers x 1 CPU plus the trial's driver on a 2-CPU machine, sits PENDING until the
user gives up. `check_request` compares a request (a list of bundles, as Ray places them) with the nodes that
exist and, on an autoscaling cluster, with the node types it can launch, and raises `ResourceError` with one line
saying what was asked and what exists. Both the sweep runner and `raygen train --workers` call it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_IGNORED = ("memory", "object_store_memory")  # Ray's own accounting; raygen never requests them


class ResourceError(RuntimeError):
    """A request the cluster cannot satisfy (one line: what was asked, what exists)."""


@dataclass
class ClusterShape:
    """Per-node totals of the live nodes, and the node types an autoscaler may add (max_count -1 = unlimited)."""

    nodes: list[dict[str, float]]
    node_types: list[tuple[dict[str, float], int]] = field(default_factory=list)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for node in self.nodes:
            for key, value in node.items():
                out[key] = out.get(key, 0.0) + value
        return out


def _clean(resources: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items()
            if float(v) > 0 and k not in _IGNORED and not k.startswith("node:") and "_group_" not in k}


def cluster_shape() -> ClusterShape:
    """The connected Ray cluster's live nodes and, when an autoscaler has published its config, its node types."""
    import ray

    nodes = [_clean(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    types: list[tuple[dict[str, float], int]] = []
    try:  # private API (pinned Ray): the autoscaler's node groups, absent on fixed clusters
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in config.node_group_configs if config is not None else ():
            types.append((_clean(dict(group.resources)), int(group.max_count)))
    except Exception as err:  # noqa: BLE001 - best effort: without it only the live nodes count
        log.debug("no autoscaler node types: %s", err)
    return ClusterShape(nodes, types)


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())


def _fmt(resources: Mapping[str, float]) -> str:
    if not resources:
        return "nothing"
    return ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()))


def check_request(bundles: Sequence[Mapping[str, float]], shape: ClusterShape, *, what: str) -> None:
    """Raise ResourceError unless every bundle fits one node (live, or a type the autoscaler can launch) and,
    without an autoscaler, all bundles together fit in the cluster's totals. Bundles use Ray's resource names
    (CPU, GPU, custom)."""
    bundles = [_clean(b) for b in bundles]
    total: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            total[k] = total.get(k, 0.0) + v
    have = shape.totals()
    exists = f"the cluster has {_fmt(have)} ({len(shape.nodes)} node{'s' if len(shape.nodes) != 1 else ''})"
    if shape.node_types:
        exists += " and can add nodes of " + "; ".join(f"{{{_fmt(r)}}}" for r, _ in shape.node_types)
    asked = f"{what} asks for {_fmt(total)}"
    if len(bundles) > 1:
        asked += " (" + " + ".join(f"{{{_fmt(b)}}}" for b in bundles) + ")"
    candidates = shape.nodes + [r for r, count in shape.node_types if count != 0]
    for b in bundles:
        if not any(_fits(b, node) for node in candidates):
            missing = sorted(k for k in b if not any(node.get(k, 0) > 0 for node in candidates))
            why = (f"no node has any {', '.join(missing)}" if missing else
                   f"no node has {{{_fmt(b)}}} free for one bundle")
            raise ResourceError(f"{asked}, but {exists}: {why}")
    if not shape.node_types and not _fits(total, have):
        short = {k: v for k, v in total.items() if have.get(k, 0.0) + 1e-9 < v}
        raise ResourceError(f"{asked}, but {exists}: short of {_fmt({k: v - have.get(k, 0.0) for k, v in short.items()})}")


def preflight(bundles: Sequence[Mapping[str, float]], *, what: str, shape: ClusterShape | None = None) -> None:
    """check_request against the connected cluster (call after ray.init)."""
    check_request(bundles, shape or cluster_shape(), what=what)


def train_bundles(workers: int, cpu: float, gpu: float, driver_cpu: float = 0.0,
                  custom: Mapping[str, float] | None = None) -> list[dict[str, float]]:
    """What one data-parallel run (or one sweep trial) asks Ray for: its driver, then one bundle per worker."""
    driver = {"CPU": driver_cpu, **(custom or {})}
    worker = {"CPU": cpu, "GPU": gpu}
    return ([driver] if any(driver.values()) else []) + [dict(worker) for _ in range(workers)]
