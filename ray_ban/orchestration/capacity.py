"""What a Ray cluster can scale to, and how many chains of a given shape fit in it.

An autoscaling cluster whose GPU nodes scale from zero shows no GPU in ``ray.cluster_resources()``
at start; sizing a sweep from that refuses it or runs one chain at a time. Here feasibility and
concurrency are judged against the node types the autoscaler can launch: from the cluster config the
autoscaler (v2, the default of ``ray up`` since Ray 2.50) reports to the GCS, else from the
autoscaler's YAML (``--cluster-config``, by default ``~/ray_bootstrap_config.yaml``, where ``ray up``
puts it on the head), else from the nodes that are up now (a fixed cluster, or a local run).

The arithmetic is pure (``NodeType``, ``chains_that_fit``, ``largest_node``); ``discover``,
``request_sweep`` and ``cluster_gpus`` are the only functions that talk to Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the config on the head
UNLIMITED = -1


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its resources and how many of it the cluster may hold (-1: no limit)."""

    name: str
    resources: dict
    max_count: int


@dataclass(frozen=True)
class Capacity:
    """The node types a sweep can use, and where that picture came from."""

    node_types: tuple[NodeType, ...]
    source: str  # "autoscaler", "autoscaler config <path>" or "nodes up now"

    @property
    def autoscaling(self) -> bool:
        return self.source != "nodes up now"

    def total(self, resource: str) -> float:
        """The most of ``resource`` the cluster can hold at once (math.inf without a limit)."""
        amount = 0.0
        for node in self.node_types:
            per_node = node.resources.get(resource, 0)
            if per_node and node.max_count == UNLIMITED:
                return math.inf
            amount += per_node * node.max_count
        return amount


def bundles_per_node(resources: dict, bundle: dict) -> int:
    """How many copies of ``bundle`` (e.g. one Train worker) fit on a node with ``resources``."""
    counts = [math.floor(resources.get(name, 0) / need + 1e-9) for name, need in bundle.items() if need > 0]
    return min(counts) if counts else 0


def chains_that_fit(capacity: Capacity, bundle: dict, workers: int) -> int:
    """How many chains of ``workers`` bundles the cluster can run at once, at its largest (0: none ever)."""
    slots = 0.0
    for node in capacity.node_types:
        per_node = bundles_per_node(node.resources, bundle)
        if per_node:
            slots += math.inf if node.max_count == UNLIMITED else per_node * node.max_count
    if slots == math.inf:
        return 1_000_000
    return int(slots // workers)


def largest_node(capacity: Capacity) -> dict:
    """The per-resource maximum over node types: what the error for an impossible chain names."""
    largest: dict = {}
    for node in capacity.node_types:
        if node.max_count == 0:
            continue
        for name, amount in node.resources.items():
            largest[name] = max(largest.get(name, 0), amount)
    return largest


def from_autoscaler_yaml(config: dict) -> tuple[NodeType, ...]:
    """Node types of an autoscaler YAML: every worker type up to its ``max_workers``, the head once."""
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        count = 1 if name == head else int(spec.get("max_workers", config.get("max_workers", 0)))
        types.append(NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()}, count))
    return tuple(types)


def from_gcs_config(cluster_config) -> tuple[NodeType, ...]:
    """Node types of the ``autoscaler_pb2.ClusterConfig`` that autoscaler v2 reports to the GCS."""
    return tuple(NodeType(group.name, {k: float(v) for k, v in group.resources.items()}, int(group.max_count))
                 for group in cluster_config.node_group_configs)


def live_nodes() -> tuple[NodeType, ...]:
    """The nodes up now, one NodeType each (a fixed cluster: nothing more will come)."""
    import ray

    return tuple(NodeType(node["NodeID"][:8], dict(node["Resources"]), 1) for node in ray.nodes() if node["Alive"])


def discover(cluster_config: Optional[str] = None) -> Capacity:
    """The capacity of the cluster this driver has joined (``ray.init`` must have run)."""
    from ray._private.state import state

    config = state.get_cluster_config()  # autoscaler v2 reports its node groups here
    if config is not None and config.node_group_configs:
        head = [n for n in live_nodes() if "node:__internal_head__" in n.resources]
        return Capacity(from_gcs_config(config) + tuple(head), "autoscaler")
    path = Path(cluster_config).expanduser() if cluster_config else BOOTSTRAP_CONFIG.expanduser()
    if path.is_file():
        types = from_autoscaler_yaml(yaml.safe_load(path.read_text()) or {})
        if types:
            return Capacity(types, f"autoscaler config {path}")
    return Capacity(live_nodes(), "nodes up now")


def cluster_gpus(address: str, cluster_config: Optional[str] = None) -> float:
    """The GPUs a running cluster has or can scale to, for a dry run's plan: joins it, asks ``discover``, leaves."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return discover(cluster_config).total("GPU")
    finally:
        ray.shutdown()


def request_sweep(bundle: dict, workers: int, chains: int) -> None:
    """Ask the autoscaler for every concurrent chain's workers at once, so nodes start together."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(bundle) for _ in range(workers * chains)])


def release_request() -> None:
    """Withdraw the sweep's standing request, so idle nodes can scale down (best effort)."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])
