"""Shared fixtures: the real CIFAR-10 JPEG Parquet beside the checkout, when it is there."""

import functools
import inspect
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from s3_server import local_s3  # noqa: F401  (the fixture, for every test module)
from sweep_helpers import SPACE, SharedRay, sweep_in_session

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"

# under pytest-xdist (the default, see pyproject's addopts) each worker shares the machine's cores with the
# others: one torch thread each; a serial run (`-n 0`) keeps two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
# every test sweep trains its own models unless it names a bank (--teachers): none shares the user's bank
os.environ["RAY_BAN_TEACHERS"] = "none"


@pytest.fixture(scope="session", autouse=True)
def private_data_cache():
    """Decoded datasets go to a cache of this test session (inherited by sweeps and Ray workers it starts), not the node's."""
    folder = tempfile.mkdtemp(prefix="ray-ban-data-test-")
    before = os.environ.get("RAY_BAN_DATA_CACHE")
    os.environ["RAY_BAN_DATA_CACHE"] = folder
    yield Path(folder)
    if before is None:
        os.environ.pop("RAY_BAN_DATA_CACHE", None)
    else:
        os.environ["RAY_BAN_DATA_CACHE"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    if not (SHARED_CIFAR / "train.parquet").is_file():
        pytest.skip(f"real CIFAR-10 Parquet not found at {SHARED_CIFAR} (only present beside the project's own checkout)")
    return SHARED_CIFAR


@pytest.fixture(scope="session")
def shared_ray():
    """The test session's one shared Ray session (started on first use, see ``SharedRay``); ended at the end."""
    folder = tempfile.mkdtemp(prefix="rb-shared-", dir="/tmp")  # short: Ray's socket paths live under it
    shared = SharedRay(folder)
    yield shared
    shared.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ray_session(shared_ray):
    """A test that needs the shared Ray session running (``sweep_in_session`` starts it too)."""
    shared_ray.ensure()
    return shared_ray


@pytest.fixture
def own_ray(shared_ray):
    """A test that starts and stops Ray in this process itself: the shared session is stopped first."""
    shared_ray.stop()


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, shared_ray):
    folder = tmp_path_factory.mktemp("sweep")
    space = folder / "shared.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    started = time.time()
    result = sweep_in_session(shared_ray, space, folder / "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, space, result, time.time() - started


RAY_CALLS = ("run_sweep(", "sweep_in_session(", "ensure()", "ray.init(", "ray_ban.run(", "Popen(command", "autoscaling_cluster(", "Cluster(")


@functools.cache  # a fixture serves many tests: its source is read once
def _source(function) -> str:
    """A test's or fixture's code, without its comments (which may name a call they do not make)."""
    try:
        return re.sub(r"#.*", "", inspect.getsource(function))
    except (OSError, TypeError):
        return ""


def _starts_ray(function) -> bool:
    return any(call in _source(function) for call in RAY_CALLS)


def _worker_group(item, functions) -> str:
    """Which tests pytest-xdist (``--dist loadgroup``) runs in one worker, in order: every test that uses Ray in
    this process (the shared session, or a session of its own started before it) in one group; every other
    test with the rest of its file (a file's module fixtures, a cluster say, are built once). Those start Ray,
    if at all, in processes of their own, so they run on whichever worker is free."""
    in_process = "shared_ray" in getattr(item, "fixturenames", ()) or any(
        call in _source(f) for f in functions for call in ("ray.init(", "ray_ban.run("))
    return "ray-session" if in_process else item.module.__name__


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the xdist_group marks added here
def pytest_collection_modifyitems(config, items):
    """Mark every test that starts Ray (a sweep, a cluster, a Ray session), itself or through a fixture, as
    ``ray``: ``-m "not ray"`` is the fast tier; the README's test command runs both tiers."""
    for item in items:
        functions = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        for definitions in (info.name2fixturedefs.values() if info else ()):
            functions += [definition.func for definition in definitions]
        functions = [f for f in functions if f is not None]
        if any(_starts_ray(f) for f in functions):
            item.add_marker(pytest.mark.ray)
        item.add_marker(pytest.mark.xdist_group(_worker_group(item, functions)))
    # the tests that start Ray in this process themselves run first, before the shared session starts,
    # which then starts once and serves every later test (a stable sort: each file keeps its order)
    items.sort(key=lambda item: 0 if {"own_ray", "local_ray"} & set(getattr(item, "fixturenames", ())) else 1)


def pytest_configure(config):
    """``--dist loadgroup`` (pyproject's addopts) must keep the Ray tests in one worker: pytest 9.2 drops the
    groups pytest-xdist 3.8 sets (pytest-dev/pytest-xdist#1386), and each worker would start a Ray session."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} ignores pytest-xdist's test groups (pytest-dev/pytest-xdist"
                                "#1386): pip install 'pytest<9.2' (make test does), or run serially with -n 0")
