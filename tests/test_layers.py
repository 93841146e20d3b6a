"""The house's rooms hold: every import in ray_ban (module level or inside a function) is walked, and the
layering of docs/architecture.md is checked on the whole graph, transitively.

- config/ (space files, recipes, search specs) is plain data: no torch, no Ray, nothing that imports them.
- core/ (and models/, data/) is pure PyTorch: no Ray, no orchestration, no results writers.
- orchestration/ is the only code that imports Ray.
- results/ reads what a sweep wrote: never the Ray layer.
- bank/ (the teacher bank) moves stored files' bytes: no Ray, no torch, nothing above config/ and store.py.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ray_ban"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in it, resolved to absolute dotted names."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            for alias in node.names:  # `from ray_ban.x import y` where y is a module
                if f"{module}.{alias.name}" in MODULES:
                    found.add(f"{module}.{alias.name}")
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through other ray_ban modules (their packages too)."""
    seen, todo = set(), [start]
    while todo:
        for name in GRAPH.get(todo.pop(), ()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                prefix = ".".join(parts[:i])
                if prefix not in seen:
                    seen.add(prefix)
                    if prefix in GRAPH and prefix != "ray_ban":  # the top package's API loads lazily, on first use
                        todo.append(prefix)
    return seen


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "top"


def external(names: set[str], root: str) -> set[str]:
    return {n for n in names if n == root or n.startswith(root + ".")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_ray_layer_imports_ray(name):
    if layer(name) == "orchestration":
        return
    direct = external(GRAPH[name], "ray")
    assert not direct, f"{name} imports {sorted(direct)}: Ray belongs in ray_ban/orchestration/"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) == "config"))
def test_configuration_is_plain_data(name):
    found = reachable(name)
    assert not external(found, "torch"), f"{name} reaches torch: configuration is plain data"
    assert not external(found, "ray"), f"{name} reaches Ray"
    inside = {n for n in found if n.startswith("ray_ban.") and layer(n) not in ("config", "top")}
    assert not inside, f"{name} imports {sorted(inside)}: config/ depends on nothing of ray_ban but itself"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) in ("core", "models", "data")))
def test_the_pytorch_core_knows_no_ray_orchestration_or_results(name):
    found = reachable(name)
    assert not external(found, "ray"), f"{name} reaches Ray"
    wrong = {n for n in found if n.startswith("ray_ban.") and layer(n) in ("orchestration", "results", "cli")}
    assert not wrong, f"{name} imports {sorted(wrong)}: the core is called by those layers, never the reverse"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) == "results"))
def test_results_never_import_the_ray_layer(name):
    found = reachable(name)
    wrong = {n for n in found if n.startswith("ray_ban.") and layer(n) in ("orchestration", "cli")}
    assert not wrong and not external(found, "ray"), f"{name} imports {sorted(wrong)}: results are read from files"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) == "bank"))
def test_the_teacher_bank_is_storage_alone(name):
    found = reachable(name)
    wrong = {n for n in found if n.startswith("ray_ban.") and layer(n) not in ("bank", "config", "top")}
    assert not wrong and not external(found, "ray"), f"{name} imports {sorted(wrong)}: the bank only moves files"
    assert not external(GRAPH[name], "torch"), f"{name} imports torch: the bank copies the stored bytes as they are"


def test_the_graph_sees_every_kind_of_import():
    """The walker is not blind: relative, absolute, in-function and from-package imports all appear."""
    assert "ray_ban.orchestration.chain_worker" in GRAPH["ray_ban.orchestration.chain"]  # inside a function
    assert "ray" in GRAPH["ray_ban.orchestration.chain"] and "torch" in GRAPH["ray_ban.core.engine"]
    assert "ray_ban.config.spaces" in reachable("ray_ban.cli.sweep")


def test_importing_the_configuration_or_the_cli_loads_no_torch_or_ray():
    # the CLI imports torch only for a space it has validated: --list, --schema, --help and a broken space file
    # answer without it (benchmarks/import_costs.py: what importing the CLI costs)
    probe = ("import sys, ray_ban.config.spaces, ray_ban.config.search, ray_ban.config.recipe, ray_ban.cli.sweep, "
             "ray_ban.cli.commands; "
             "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
