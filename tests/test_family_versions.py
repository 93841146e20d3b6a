"""The family code versions (``config/family_versions.py``, plain data) against the model registry: no
registered family or name pattern can be forgotten, and each family lists the families it builds with."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ray_ban import models  # noqa: F401  (registers every family)
from ray_ban.config import family_versions
from ray_ban.models import registry

MODELS = Path(models.__file__).parent


def registered() -> dict[str, str]:
    """Every registered name pattern -> the family module whose builder it is."""
    return {entry.pattern: entry.builder.__module__.rpartition(".")[2] for entry in registry._ENTRIES.values()}


def test_every_registered_pattern_names_the_family_that_registers_it():
    assert family_versions.PATTERNS == registered()


def test_every_family_module_has_a_version():
    modules = {p.stem for p in MODELS.glob("*.py")} - {"__init__", "registry", "flops"}
    assert set(family_versions.FAMILIES) == modules


@pytest.mark.parametrize("family", sorted(family_versions.FAMILIES))
def test_a_family_builds_on_exactly_the_families_it_imports(family):
    tree = ast.parse((MODELS / f"{family}.py").read_text())
    imported = {node.module.rpartition(".")[2] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ray_ban.models.")}
    version, builds_on = family_versions.FAMILIES[family]
    assert isinstance(version, int) and version >= 1
    assert set(builds_on) == imported & set(family_versions.FAMILIES)


def test_every_example_resolves_to_its_family_and_what_it_builds_on():
    for name in registry.examples() + registry.TINY_MEMBERS:
        builder, _ = registry.lookup(name)
        assert family_versions.family_of(name) == builder.__module__.rpartition(".")[2]
    assert family_versions.family_versions("ban-wrn-1-1") == {"ban_students": 1, "common": 1, "densenet": 1,
                                                              "preresnet": 1, "wide_resnet": 1}
    assert family_versions.family_versions("lstm-2x1500") == {"language": 1}
    assert family_versions.bumped_versions("no-such-net") == {}  # the CLI's validation names it, with close matches
