"""cluster.yaml validated offline with Ray's own launcher checks (no cloud credentials needed)."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_launcher_validation():
    config = prepare_config(load())
    validate_config(config)
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["resources"]["chain_driver"] > 0
    gpu_types = [t for t in types if t != "head"]
    assert all(types[t]["min_workers"] == 0 for t in gpu_types)  # GPU nodes only while work waits
    assert all("chain_driver" not in types[t]["resources"] for t in gpu_types)  # drivers never on spot nodes
    assert any(types[t]["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in gpu_types)
    assert any("InstanceMarketOptions" not in types[t]["node_config"] for t in gpu_types)  # on-demand fallback
    assert any("pip install" in c and "ray-ban" in c for c in config["setup_commands"])


@pytest.mark.parametrize("breakage", ["unknown key", "head type missing", "fractional node GPU"])
def test_a_broken_copy_is_rejected(breakage):
    config = copy.deepcopy(load())
    if breakage == "unknown key":
        config["max_wokers"] = 3
    elif breakage == "head type missing":
        config["head_node_type"] = "gpu-8x"
    else:
        config["available_node_types"]["gpu-1x-spot"]["resources"] = {"GPU": 0.5}
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
