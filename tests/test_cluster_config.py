"""cluster.yaml checked offline: Ray's own launcher validation (no cloud credentials needed), and the
properties a real `ray up` on AWS depends on (docker image, torch's CUDA, IAM, spot, driver placement)."""

import copy
import functools
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3\d+)-cu(?P<cuda>\d{3})")
ARN = re.compile(r"arn:aws:iam::[A-Za-z0-9_]+:instance-profile/[\w+=,.@-]+")


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture
def config(monkeypatch, tmp_path) -> dict:
    """The launcher's view of cluster.yaml, built with no way to reach AWS credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    prepared = prepare_config(load())
    validate_config(prepared)
    return prepared


def gpu_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def setup_words(config: dict) -> list[list[str]]:
    return [shlex.split(command) for command in config["setup_commands"]]


def test_cluster_yaml_passes_rays_launcher_validation(config):
    from ray_ban.orchestration.chain import DRIVER_RESOURCE

    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # no Train worker is ever placed on the head
    assert head["resources"][DRIVER_RESOURCE] >= 1  # every chain's driver runs there
    workers = gpu_types(config)
    assert workers and all(t["min_workers"] == 0 for t in workers.values())  # GPU nodes only while work waits
    assert all(DRIVER_RESOURCE not in t["resources"] for t in workers.values())  # drivers never on spot nodes


def test_every_node_type_has_an_instance_profile(config):
    """Workers write checkpoints and results to s3:// themselves: without a profile they cannot."""
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert ARN.fullmatch(profile.get("Arn", "")), (name, profile)


def test_nodes_run_the_projects_ray_and_python_in_rays_docker_image(config):
    match = IMAGE.fullmatch(config["docker"]["image"])
    assert match, config["docker"]["image"]
    assert Version(match["ray"]).release[:2] == Version(ray.__version__).release[:2]  # the Ray the project pins
    ray_pin = next(d for d in PROJECT["dependencies"] if d.startswith("ray["))
    assert match["ray"] in SpecifierSet(ray_pin.split("]", 1)[1])
    python = f"{match['py'][0]}.{match['py'][1:]}"
    assert python == "3.11" and python + ".0" in SpecifierSet(PROJECT["requires-python"])
    # one image everywhere: no node type may swap in another Ray or Python
    assert not {"head_image", "worker_image"} & set(config["docker"])
    assert all("docker" not in t for t in config["available_node_types"].values())
    # inside the container: pip is the image's Python 3.11, not the AMI's system python3
    assert not any(w[:1] == ["python3"] or w[:1] == ["sudo"] for w in setup_words(config))


def test_torch_is_the_projects_version_built_for_the_images_cuda(config):
    cuda = IMAGE.fullmatch(config["docker"]["image"])["cuda"]
    install = next(w for w in setup_words(config) if w[:2] == ["pip", "install"] and any(x.startswith("torch==") for x in w))
    pins = dict(x.split("==") for x in install if "==" in x)
    assert pins["torch"].endswith(f"+cu{cuda}") and pins["torchvision"].endswith(f"+cu{cuda}"), pins
    assert install[install.index("--extra-index-url") + 1].endswith(f"/whl/cu{cuda}")
    tested = dict(re.findall(r"\b(torch|torchvision)==([\d.]+)\s", (ROOT / "Makefile").read_text()))
    assert {k: v.split("+")[0] for k, v in pins.items()} == tested  # the versions the test suite runs
    torch_range = next(d for d in PROJECT["dependencies"] if d.startswith("torch>"))
    assert Version(pins["torch"]) in SpecifierSet(torch_range[len("torch"):])
    # the node's setup fails loudly if pip brought any other CUDA variant
    assert any(f"torch.version.cuda == '{cuda[:2]}.{cuda[2:]}'" in c for c in config["setup_commands"])


def test_the_project_is_installed_from_the_synced_checkout(config):
    remote = next(r for r, local in config["file_mounts"].items() if local == ".")
    assert any(w[:3] == ["cd", remote, "&&"] and w[3:5] == ["pip", "install"] and w[-1].startswith(".")
               for w in setup_words(config)), config["setup_commands"]
    assert ".venv" in config["rsync_exclude"] and ".git" in config["rsync_exclude"]


def test_spot_gpu_types_and_an_on_demand_one(config):
    workers = gpu_types(config)
    spot = {n for n, t in workers.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    assert spot and set(workers) - spot, workers  # spot, and an on-demand fallback
    assert all(re.match(r"[gp]\d", t["node_config"]["InstanceType"]) for t in workers.values())


def test_a_single_gpu_chain_starts_the_spot_node_not_its_on_demand_twin(config):
    """The autoscaler's own choice, given the resources AWS reports for these instance types."""
    types = copy.deepcopy(config["available_node_types"])
    reported = {"g5.2xlarge": {"CPU": 8, "GPU": 1}, "g5.12xlarge": {"CPU": 48, "GPU": 4}}
    for node_type in gpu_types(config):
        types[node_type]["resources"] = dict(reported[types[node_type]["node_config"]["InstanceType"]])
    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    demand = [{"CPU": 1, "GPU": 0.25}]  # one worker of a chain packed four per GPU
    chosen, unmet = get_nodes_for(types, {}, config["head_node_type"], 1, demand, scorer)
    assert not unmet and dict(chosen) == {"gpu-1x-spot": 1}
    full = {"gpu-1x-spot": types["gpu-1x-spot"]["max_workers"]}  # spot at its cap: on-demand takes over
    chosen, _ = get_nodes_for(types, full, config["head_node_type"], 1, demand, scorer)
    assert dict(chosen) == {"gpu-1x-ondemand": 1}


def test_the_dashboard_is_reached_through_rays_ssh_tunnel_only(config):
    """`ray dashboard cluster.yaml` forwards 127.0.0.1:8265 to the head's own 8265 over SSH, the only
    port AWS's default security group opens; nothing relies on 8265 on the head's public address."""
    from ray.scripts.scripts import dashboard, start

    forwards = {p.name: p.default for p in dashboard.params}
    serves = {p.name: p.default for p in start.params}
    assert forwards["remote_port"] == serves["dashboard_port"]  # the tunnel's end is where the head listens
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start --head" in c)
    assert "--dashboard-host=127.0.0.1" in head_start and "--dashboard-port" not in head_start
    assert "security_group" not in config["provider"]  # Ray's default group: SSH from outside, all within
    assert not any({"SecurityGroupIds", "NetworkInterfaces"} & set(t["node_config"])
                   for t in config["available_node_types"].values())


@pytest.mark.parametrize("breakage", ["unknown key", "head type missing", "fractional node GPU", "unknown docker key"])
def test_a_broken_copy_is_rejected(breakage):
    config = copy.deepcopy(load())
    if breakage == "unknown key":
        config["max_wokers"] = 3
    elif breakage == "head type missing":
        config["head_node_type"] = "gpu-8x"
    elif breakage == "fractional node GPU":
        config["available_node_types"]["gpu-1x-spot"]["resources"] = {"GPU": 0.5}
    else:
        config["docker"]["pull_before_running"] = True
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
