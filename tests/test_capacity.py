"""What a cluster can scale to, as pure arithmetic on node types (the sweep sizes itself from this)."""

import math

from ray_ban.orchestration.capacity import Capacity, NodeType, bundles_per_node, chains_that_fit, from_autoscaler_yaml
from ray_ban.orchestration.capacity import largest_node

CONFIG = {  # the shape of cluster.yaml: a head with drivers only, GPU types from zero
    "head_node_type": "head", "max_workers": 20,
    "available_node_types": {
        "head": {"resources": {"CPU": 0, "chain_driver": 48}, "max_workers": 0},
        "gpu-1x-spot": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 12},
        "gpu-4x-spot": {"resources": {"CPU": 32, "GPU": 4}, "min_workers": 0, "max_workers": 4},
    },
}


def test_node_types_of_an_autoscaler_yaml_count_the_head_once_and_workers_to_their_maximum():
    types = {t.name: t for t in from_autoscaler_yaml(CONFIG)}
    assert types["head"].max_count == 1 and types["gpu-1x-spot"].max_count == 12
    capacity = Capacity(tuple(types.values()), "autoscaler config cluster.yaml")
    assert capacity.autoscaling and capacity.total("GPU") == 12 + 16 and capacity.total("CPU") == 96 + 128


def test_chains_that_fit_on_what_the_cluster_can_scale_to():
    capacity = Capacity(from_autoscaler_yaml(CONFIG), "autoscaler")
    assert chains_that_fit(capacity, {"CPU": 1, "GPU": 1}, workers=1) == 28  # 12 single-GPU nodes + 4 x 4
    assert chains_that_fit(capacity, {"CPU": 1, "GPU": 0.25}, workers=1) == 112  # packed four to a GPU
    assert chains_that_fit(capacity, {"CPU": 8, "GPU": 1}, workers=4) == 7  # 12 + 4 x 4 = 28 worker bundles, 4 per chain
    assert chains_that_fit(capacity, {"CPU": 64, "GPU": 0}, workers=1) == 0  # no node type holds one worker
    assert largest_node(capacity) == {"CPU": 32, "chain_driver": 48, "GPU": 4}
    assert bundles_per_node({"CPU": 2}, {"CPU": 1, "GPU": 0}) == 2


def test_a_node_type_without_a_limit_holds_any_number():
    unlimited = Capacity((NodeType("any", {"CPU": 4}, -1),), "autoscaler")
    assert unlimited.total("CPU") == math.inf and chains_that_fit(unlimited, {"CPU": 1}, workers=2) >= 1000
