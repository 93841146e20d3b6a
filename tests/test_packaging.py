"""ray-ban as a user installs it: a wheel built from the checkout, installed apart from it, run from
another folder (no source tree on the path): the shipped tables and the throughput table are package data, the
console script works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(folder / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((folder / "dist").glob("ray_ban-*.whl"))
    site = folder / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    return site, elsewhere, {**os.environ, "PYTHONPATH": str(site)}


def _run(command, installed):
    site, elsewhere, env = installed
    return subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)


def test_the_wheel_runs_from_another_folder_without_the_source_tree(installed):
    site, _, _ = installed
    where = _run([sys.executable, "-c", "import ray_ban; print(ray_ban.__file__, ray_ban.__version__)"], installed)
    assert where.returncode == 0 and where.stdout.startswith(str(site)), where.stdout + where.stderr
    listed = _run([sys.executable, "-m", "ray_ban.sweep", "--list"], installed)
    assert listed.returncode == 0 and {"table1", "table5", "cifar10-cpu"} <= set(listed.stdout.split())
    dry = _run([sys.executable, "-m", "ray_ban.sweep", "table5", "--preset", "smoke", "--dry-run"], installed)
    assert dry.returncode == 0 and "sweep table5 (smoke preset)" in dry.stdout, dry.stdout + dry.stderr
    assert "plan in GPU-hours on NVIDIA H200" in dry.stdout, dry.stdout  # the throughput table is package data
    assert not Path(installed[1], "runs").exists()  # a dry run writes nothing


def test_the_console_script(installed):
    site, _, _ = installed
    script = site / "bin" / "ray-ban"
    listed = _run([sys.executable, str(script), "sweep", "--list"], installed)
    assert listed.returncode == 0 and "table1" in listed.stdout.split(), listed.stdout + listed.stderr
    version = _run([sys.executable, str(script), "--version"], installed)
    assert version.stdout.startswith("ray-ban ")
    unknown = _run([sys.executable, str(script), "sweeep"], installed)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
