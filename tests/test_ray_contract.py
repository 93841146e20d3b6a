"""Every private or internal Ray symbol ray-ban relies on, checked against the installed Ray.

Ray may move or reshape anything outside its public API in any release. Each ``Internal`` in
``CONTRACT`` names one such symbol, the project files that use it and why, and where to look when it
breaks; ``test_ray_still_has`` checks that it resolves with the expected shape. ``test_no_unlisted_
ray_internals`` scans the project's source (ray_ban/, tests/, benchmarks/; not this file) so that a
new use cannot land without an entry, and ``test_no_stale_entries`` that every entry is still used.

To add an entry: ``symbol`` is "module:Qual.name" (imported, then looked up attribute by attribute);
``seen_as`` lists what the scanner reports for the use when the symbol alone does not say it
(".attr" for an attribute, "$NAME" for an environment variable; "module:name" for an import and
".name" for each private part of ``symbol`` are derived); ``shape`` gets the resolved object and
raises AssertionError saying what changed.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import ray

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Internal:
    """One private or internal Ray symbol the project relies on, and what to do when Ray moves it."""

    symbol: str
    used_by: tuple[str, ...]
    purpose: str
    fix: str
    seen_as: tuple[str, ...] = ()
    shape: Optional[Callable[[Any], None]] = None

    def keys(self) -> set[str]:
        """What the scanner reports for uses of this symbol."""
        qualname = self.symbol.partition(":")[2]
        return {self.symbol, *self.seen_as} | {"." + part for part in qualname.split(".")[1:] if is_private(part)}

    def label(self) -> str:
        return self.symbol + (f" (seen as {', '.join(self.seen_as)})" if self.seen_as else "")


def is_private(name: str) -> bool:
    """Ray-private by its name: a leading underscore, except Python's own dunders (Ray's __ray_*__ are private)."""
    if name.startswith("__") and name.endswith("__"):
        return name.startswith("__ray")
    return name.startswith("_")


# --- shapes -------------------------------------------------------------------------------------

def takes(*names: str) -> Callable[[Any], None]:
    """The callable still accepts these parameters by name."""
    def check(obj: Any) -> None:
        present = inspect.signature(obj).parameters
        missing = [n for n in names if n not in present]
        assert not missing, f"{obj.__qualname__}{inspect.signature(obj)} lacks {missing}"
    return check


def is_class(obj: Any) -> None:
    assert inspect.isclass(obj), f"{obj!r} is no longer a class"


def reads_variable(fn: Any, name: str) -> None:
    assert name in inspect.getsource(fn), f"{fn.__qualname__} no longer reads ${name}"


def assert_callable(obj: Any) -> None:
    assert callable(obj), f"{obj!r} is no longer callable"


def env_knob(name: str, registry: str) -> Callable[[Any], None]:
    """Ray still reads environment variable ``name``: the constant holds it and ``registry`` lists it."""
    def check(obj: Any) -> None:
        if isinstance(obj, str):
            assert obj == name, f"the constant now holds {obj!r}, not {name!r}"
        listed = resolve(registry)
        assert name in listed, f"{name} is no longer in {registry}"
    return check


def trainer_callbacks_are_filterable(method: Any) -> None:
    """fit() builds the controller's callbacks with this method, and its list still holds the two
    callbacks ChainTrainer drops, while ChainTrainer keeps the handler that runs ReportToTrial."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2._internal.callbacks.user_callback import UserCallbackHandler
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from ray_ban.orchestration.chain import ChainTrainer

    assert list(inspect.signature(method).parameters) == ["self"], inspect.signature(method)
    assert "self._create_default_callbacks()" in inspect.getsource(DataParallelTrainer.fit), \
        "DataParallelTrainer.fit no longer builds its callbacks with _create_default_callbacks()"
    with tempfile.TemporaryDirectory() as storage:
        def build(cls, **extra):
            return cls(lambda config: None, train_loop_config={}, scaling_config=ScalingConfig(num_workers=1),
                       run_config=RunConfig(name="contract", storage_path=storage), **extra)

        default = [type(c) for c in build(DataParallelTrainer)._create_default_callbacks()]
        lean = [type(c) for c in build(ChainTrainer, keep_group_cleaner=False)._create_default_callbacks()]
    assert DatasetsCallback in default and PlacementGroupCleanerCallback in default, default
    assert DatasetsCallback not in lean and PlacementGroupCleanerCallback not in lean, lean
    assert UserCallbackHandler in lean, lean


def trial_keeps_its_actor(state_class: Any) -> None:
    from ray.tune.experiment.trial import Trial

    trial = Trial("__fake", stub=True)
    assert isinstance(trial.temporary_state, state_class), type(trial.temporary_state)
    assert hasattr(trial.temporary_state, "ray_actor"), "Trial.temporary_state has no ray_actor"
    assert "temporary_state.ray_actor =" in inspect.getsource(Trial.set_ray_actor), \
        "Trial.set_ray_actor no longer stores the actor in temporary_state.ray_actor"


def actors_answer_ray_ready(modify_class: Any) -> None:
    probe = modify_class(type("Probe", (), {}))
    assert probe().__ray_ready__() is True, "actor classes lost their built-in __ray_ready__"


def optuna_searcher_holds_its_study(searcher_class: Any) -> None:
    from ray import tune

    searcher = searcher_class(space={"x": tune.uniform(0, 1)}, metric="m", mode="min")
    assert searcher._ot_study is not None and searcher._ot_study.trials == [], vars(searcher)


def snapshot_lists_recorded_checkpoints(name: Any) -> None:
    """The checkpoint manager's snapshot is still a JSON file of that name whose checkpoint_results hold each
    recorded checkpoint's folder name (what chain_worker.recorded_checkpoints reads)."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager

    assert name == "checkpoint_manager_snapshot.json", name
    source = inspect.getsource(CheckpointManager._save_state)
    assert "checkpoint_results=" in source and "checkpoint_dir_name" in inspect.getsource(
        importlib.import_module(CheckpointManager.__module__)), "the snapshot no longer lists checkpoint_results by folder name"


def is_property(obj: Any) -> None:
    assert isinstance(obj, property), f"{obj!r} is no longer a property"


# --- the contract ---------------------------------------------------------------------------------

V2_TRAINER = "ray/train/v2/api/data_parallel_trainer.py"

CONTRACT: list[Internal] = [
    Internal(
        "ray.train.v2.api.data_parallel_trainer:DataParallelTrainer", ("ray_ban/orchestration/chain.py",),
        "ChainTrainer's base: Train V2's data-parallel trainer, which (unlike TorchTrainer) imports no torch "
        "in the trial's actor and Train's controller",
        f"{V2_TRAINER}; Ray 2.60 exports this class from no public module (ray.train.data_parallel_trainer holds "
        "V1's), so find its new home, or fall back to ray.train.torch.TorchTrainer (imports torch per chain)",
        shape=takes("train_loop_per_worker", "train_loop_config", "scaling_config", "run_config")),
    Internal(
        "ray.train.v2.api.data_parallel_trainer:DataParallelTrainer._create_default_callbacks", ("ray_ban/orchestration/chain.py",),
        "ChainTrainer leaving out the DatasetManager and PlacementGroupCleaner actors of every chain's Train run",
        f"{V2_TRAINER}: fit() and _create_default_callbacks(); keep ChainTrainer's filter in step with them",
        shape=trainer_callbacks_are_filterable),
    Internal(
        "ray.train.v2._internal.callbacks.datasets:DatasetsCallback", ("ray_ban/orchestration/chain.py",),
        "the callback (and its DatasetManager actor) a chain, which uses no Ray Datasets, leaves out",
        "ray/train/v2/_internal/callbacks/ for the callback that starts the DatasetManager", shape=is_class),
    Internal(
        "ray.train.v2._internal.callbacks.placement_group_callback:PlacementGroupCleanerCallback",
        ("ray_ban/orchestration/chain.py",),
        "the callback left out where no dashboard answers its State API (placement.ReleaseStoppedChains frees "
        "stopped chains' groups instead)",
        "ray/train/v2/_internal/callbacks/ for the callback that starts the PlacementGroupCleaner", shape=is_class),
    Internal(
        "ray.train.v2._internal.constants:HEALTH_CHECK_INTERVAL_S_ENV_VAR",
        ("ray_ban/orchestration/sweep.py",),
        "polling Train's workers every 0.25 s instead of 2 s (short generations wait on that poll)",
        "ray/train/v2/_internal/execution/controller/controller.py, where the poll interval is read",
        seen_as=("$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",),
        shape=env_knob("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "ray.train.v2._internal.constants:ENV_VARS_TO_PROPAGATE")),
    Internal(
        "ray.train.v2._internal.constants:ENABLE_PREEMPTION_WATCHER_ENV_VAR", ("ray_ban/orchestration/sweep.py",),
        "local runs skipping Train's per-chain PreemptionWatcher actor",
        "ray/train/v2/_internal/execution/controller/controller.py, where the watcher is started",
        seen_as=("$RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",),
        shape=env_knob("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "ray.train.v2._internal.constants:ENV_VARS_TO_PROPAGATE")),
    Internal(
        "ray.train.v2._internal.constants:CHECKPOINT_MANAGER_SNAPSHOT_FILENAME", ("ray_ban/orchestration/chain_worker.py",),
        "the fault-injection test hook waits until Train has recorded a checkpoint before its worker kills itself, "
        "so the resume tests can require that the generation resumed from it",
        "ray/train/v2/_internal/execution/checkpoint/checkpoint_manager.py (_save_state, _write_state_to_storage)",
        shape=snapshot_lists_recorded_checkpoints),
    Internal(
        "ray.tune.constants:TUNE_ENV_VARS", ("ray_ban/orchestration/sweep.py",),
        "no CSV/JSON/TensorBoard logger callbacks per trial (the sweep writes its own results)",
        "ray/tune/utils/callback.py, where Tune adds its default loggers",
        seen_as=("$TUNE_DISABLE_AUTO_CALLBACK_LOGGERS",),
        shape=env_knob("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "ray.tune.constants:TUNE_ENV_VARS")),
    Internal(
        "ray.air.constants:AIR_ENV_VARS", ("ray_ban/orchestration/sweep.py",),
        "Tune's legacy progress reporter, which is silent at verbose=0 (the new one prints anyway)",
        "ray/tune/experimental/output.py, where the output engine is chosen",
        seen_as=("$RAY_AIR_NEW_OUTPUT",), shape=env_knob("RAY_AIR_NEW_OUTPUT", "ray.air.constants:AIR_ENV_VARS")),
    Internal(
        "ray.tune.experiment.trial:_TemporaryTrialState", ("ray_ban/orchestration/placement.py",),
        "trial.temporary_state.ray_actor: the trial's actor, whose exit tells ReleaseStoppedChains that the "
        "chain's Train controller (and so nothing that could still use its placement group) is gone",
        "ray/tune/experiment/trial.py (where Tune keeps a trial's actor) and ray/tune/execution/tune_controller.py "
        "(whether callbacks still run before the actor is stopped)",
        seen_as=(".temporary_state",), shape=trial_keeps_its_actor),
    Internal(
        "ray.actor:_modify_class", ("ray_ban/orchestration/placement.py",),
        "actor.__ray_ready__(), every actor's built-in no-op method, which ReleaseStoppedChains calls to learn "
        "whether the trial's actor has exited",
        "ray/actor.py, where actor classes get their built-in methods",
        seen_as=(".__ray_ready__",), shape=actors_answer_ray_ready),
    Internal(
        "ray.actor:ActorHandle._actor_id", ("tests/test_relay.py",),
        "checking that a trial's relay lookup finds the sweep's own relay actor",
        "ray/actor.py; ActorHandle.__eq__ compares actor ids, so `found == relay` needs no private attribute",
        shape=is_property),
    Internal(
        "ray.tune.search.optuna:OptunaSearch", ("tests/test_search.py",),
        "searcher._ot_study: reading the restored Optuna searcher's study to check what it suggested",
        "ray/tune/search/optuna/optuna_search.py, where the study is created and restored",
        seen_as=("._ot_study",), shape=optuna_searcher_holds_its_study),
    Internal(
        "ray.autoscaler._private.util:prepare_config", ("tests/test_cluster_config.py",),
        "validating cluster.yaml offline with the launcher's own defaults (ray up has no dry run)",
        "ray/autoscaler/_private/util.py and ray/autoscaler/_private/commands.py (what ray up calls first)",
        shape=takes("config")),
    Internal(
        "ray.autoscaler._private.util:validate_config", ("tests/test_cluster_config.py",),
        "validating cluster.yaml offline against Ray's cluster schema",
        "ray/autoscaler/_private/util.py and ray/autoscaler/ray-schema.json", shape=takes("config")),
    Internal(
        "ray.autoscaler._private.resource_demand_scheduler:get_nodes_for", ("tests/test_cluster_config.py",),
        "checking which node type the autoscaler launches for a chain (spot before on-demand)",
        "ray/autoscaler/_private/resource_demand_scheduler.py (the v1 autoscaler's node-type choice)",
        shape=takes("node_types", "existing_nodes", "head_node_type", "max_to_add", "resources", "utilization_scorer")),
    Internal(
        "ray.autoscaler._private.resource_demand_scheduler:_default_utilization_scorer",
        ("tests/test_cluster_config.py",),
        "the autoscaler's default score of a node type for a demand",
        "ray/autoscaler/_private/resource_demand_scheduler.py",
        shape=takes("node_resources", "resources", "node_type", "node_availability_summary")),
    Internal(
        "ray.autoscaler._private.node_provider_availability_tracker:NodeAvailabilitySummary",
        ("tests/test_cluster_config.py",),
        "the (empty) launch-failure history the scorer takes",
        "ray/autoscaler/_private/node_provider_availability_tracker.py", shape=takes("node_availabilities")),
    Internal(
        "ray._private.state:state", ("ray_ban/orchestration/capacity.py",),
        "state.get_cluster_config(): the node groups (resources, max count) autoscaler v2 reports to the GCS, "
        "which size a sweep on a cluster whose nodes scale from zero (Ray Train's worker group reads it too)",
        "ray/_private/state.py (get_cluster_config) and ray/train/v2/_internal/execution/worker_group/worker_group.py "
        "(how Train reads the cluster's maximum resources)",
        shape=lambda state: takes()(state.get_cluster_config)),
    Internal(
        "ray._raylet:GcsClient", ("ray_ban/orchestration/auth_probe.py",),
        "asking a cluster's GCS, before joining it, whether it requires an auth token (it raises "
        "ray.exceptions.AuthenticationError when it does and none was sent)",
        "ray/_raylet.pyx (GcsClient) and ray/_private/worker.py (how ray.init connects and checks authentication)",
        shape=is_class),
    Internal(
        "ray._raylet:Config", ("ray_ban/orchestration/sweep.py",),
        "Config.initialize(''): Ray reading RAY_AUTH_MODE again after its import, as Ray's own "
        "authentication_token_setup._enable_token_auth does",
        "ray/_private/authentication/authentication_token_setup.py (_enable_token_auth)",
        shape=lambda config: (is_class(config), assert_callable(config.initialize))),
    Internal(
        "ray._common.utils:get_default_system_temp_dir", ("tests/test_multinode.py", "benchmarks/multinode.py"),
        "RAY_TMPDIR: where ray.cluster_utils.Cluster writes its address file (ray_current_cluster), whatever its "
        "temp_dir, kept in the test's own folder instead of the machine's /tmp/ray",
        "ray/_common/utils.py (get_ray_address_file) and ray/cluster_utils.py (Cluster.add_node, write_ray_address)",
        seen_as=("$RAY_TMPDIR",), shape=lambda fn: reads_variable(fn, "RAY_TMPDIR")),
    Internal(
        "ray.tune.search:Searcher", ("ray_ban/orchestration/release.py",),
        "TeacherFirst, a Searcher (DeveloperAPI) that releases each chain's trial once its teacher is stored",
        "ray/tune/search/searcher.py and ray/tune/search/search_generator.py (how suggest's None and FINISHED are read)",
        seen_as=(".suggest", ".on_trial_complete", ".set_search_properties", ".save", ".restore"),
        shape=lambda cls: (takes("trial_id")(cls.suggest), takes("trial_id", "result", "error")(cls.on_trial_complete),
                           takes("metric", "mode", "config")(cls.set_search_properties),
                           takes("checkpoint_path")(cls.save), takes("checkpoint_path")(cls.restore),
                           _finished_is_a_string(cls))),
    Internal(
        "ray.autoscaler._private.fake_multi_node.node_provider:FakeMultiNodeProvider", ("tests/cluster_helpers.py",),
        "the local autoscaling cluster of the cluster-path tests: worker raylets launched as local processes",
        "ray/autoscaler/_private/fake_multi_node/node_provider.py and ray/autoscaler/_private/providers.py",
        seen_as=("$RAY_FAKE_CLUSTER",), shape=is_class),
    Internal(
        "ray.train:UserCallback.after_report", ("ray_ban/orchestration/relay.py",),
        "ReportToTrial, a Train callback (DeveloperAPI) that Train's controller calls with each report",
        "ray/train/v2/api/callback.py and ray/train/v2/_internal/callbacks/user_callback.py (how it is called)",
        seen_as=(".after_report",), shape=takes("run_context", "metrics", "checkpoint")),
]


def _finished_is_a_string(cls: Any) -> None:
    assert isinstance(cls.FINISHED, str), f"Searcher.FINISHED is now {cls.FINISHED!r}"


def resolve(symbol: str) -> Any:
    module, _, qualname = symbol.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("entry", CONTRACT, ids=lambda e: e.label())
def test_ray_still_has(entry: Internal):
    where = f"Ray {ray.__version__} moved or reshaped {entry.label()}, used by {', '.join(entry.used_by)} " \
            f"for {entry.purpose}; see {entry.fix}"
    try:
        obj = resolve(entry.symbol)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{where}. What changed: {error}")
    if entry.shape is not None:
        try:
            entry.shape(obj)
        except (AssertionError, AttributeError, TypeError, ValueError) as error:
            pytest.fail(f"{where}. What changed: {error}")


# --- the scanner ----------------------------------------------------------------------------------

SCANNED = ("ray_ban", "tests", "benchmarks")
# ray.init's documented address variable; token authentication's documented settings (Ray security docs);
# the documented switch for usage statistics
PUBLIC_ENV_VARS = {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED"}
WATCHED_ATTRIBUTES = {"temporary_state"}  # public-looking names that reach Ray internals
ENV_NAME = re.compile(r"(RAY|TUNE)_[A-Z0-9_]+")


def is_internal_module(module: str) -> bool:
    """Ray's private modules, and Train V2's (whose public API ray.train re-exports)."""
    parts = module.split(".")
    return parts[0] == "ray" and (any(p.startswith("_") for p in parts) or parts[1:3] == ["train", "v2"])


def project_files() -> list[Path]:
    me = Path(__file__).resolve()
    return [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py")) if p.resolve() != me]


def defined_names(trees: list[ast.AST]) -> set[str]:
    """Every name the project defines itself (functions, classes, assigned names and attributes)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for part in ast.walk(target):
                        if isinstance(part, ast.Attribute):
                            names.add(part.attr)
                        elif isinstance(part, ast.Name):
                            names.add(part.id)
    return names


def imported(tree: ast.AST) -> dict[str, tuple[str, Optional[str]]]:
    """name bound by an import -> (module, attribute or None)."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = (alias.name if alias.asname else alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = (node.module, alias.name)
    return bound


def ray_object(expr: ast.expr, bound: dict) -> Any:
    """The Ray object an expression such as ``tune.Callback`` names, or None."""
    if isinstance(expr, ast.Name) and expr.id in bound and bound[expr.id][0].split(".")[0] == "ray":
        module, attr = bound[expr.id]
        try:
            obj = importlib.import_module(module)
            return getattr(obj, attr) if attr else obj
        except (ImportError, AttributeError):
            try:
                return importlib.import_module(f"{module}.{attr}")
            except ImportError:
                return None
    if isinstance(expr, ast.Attribute):
        return getattr(ray_object(expr.value, bound), expr.attr, None)
    return None


def is_public_api(cls: type) -> bool:
    from ray.util.annotations import AnnotationType

    return cls.__dict__.get("_annotated") == cls.__name__ and cls.__dict__.get("_annotated_type") == AnnotationType.PUBLIC_API


def overridden(base: Any, name: str) -> bool:
    """Whether defining ``name`` in a subclass of Ray's ``base`` overrides something outside Ray's public API."""
    if not inspect.isclass(base) or not hasattr(base, name) or (name.startswith("__") and name.endswith("__")):
        return False
    owner = next((c for c in base.__mro__ if name in c.__dict__), None)
    return is_private(name) or (owner is not None and owner.__module__.startswith("ray") and not is_public_api(owner))


def scan(source: str, path: str, defined: set[str]) -> dict[str, list[str]]:
    """Uses of Ray internals in one file: key -> ["path:line", ...]."""
    tree = ast.parse(source)
    bound = imported(tree)
    found: dict[str, list[str]] = defaultdict(list)

    def note(key: str, node: ast.AST) -> None:
        found[key].append(f"{path}:{node.lineno}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ray":
            for alias in node.names:
                if is_internal_module(node.module) or is_private(alias.name):
                    note(f"{node.module}:{alias.name}", node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_internal_module(alias.name):
                    note(f"{alias.name}:", node)
        elif isinstance(node, ast.Attribute):
            receiver = bound.get(node.value.id) if isinstance(node.value, ast.Name) else None
            if receiver and receiver[0].split(".")[0] != "ray":
                continue  # another library's attribute (torch._dynamo and the like)
            if node.attr in WATCHED_ATTRIBUTES or (is_private(node.attr) and node.attr not in defined):
                note(f".{node.attr}", node)
        elif isinstance(node, ast.ClassDef):
            bases = [b for b in (ray_object(e, bound) for e in node.bases) if b is not None]
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(overridden(b, item.name) for b in bases):
                    note(f".{item.name}", item)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value):
            if not node.value.startswith("RAY_BAN_") and node.value not in PUBLIC_ENV_VARS:
                note(f"${node.value}", node)
    return found


@functools.lru_cache(maxsize=1)
def scan_project() -> dict[str, list[str]]:
    files = project_files()
    sources = {p: p.read_text() for p in files}
    defined = defined_names([ast.parse(s) for s in sources.values()])
    found: dict[str, list[str]] = defaultdict(list)
    for path, source in sources.items():
        for key, where in scan(source, str(path.relative_to(ROOT)), defined).items():
            found[key] += where
    return found


def test_no_unlisted_ray_internals():
    listed = set().union(*(entry.keys() for entry in CONTRACT))
    unlisted = {key: where for key, where in scan_project().items() if key not in listed}
    assert not unlisted, "Ray internals used without a CONTRACT entry in tests/test_ray_contract.py " \
        "(add an Internal(...) saying what for and where to look when Ray moves it, or use a public API):\n" + \
        "\n".join(f"  {key}  at {', '.join(where)}" for key, where in sorted(unlisted.items()))


def test_no_stale_entries():
    found = scan_project()
    stale = [f"{entry.label()} in {path}" for entry in CONTRACT for path in entry.used_by
             if not any(loc.rsplit(":", 1)[0] == path for key in entry.keys() for loc in found.get(key, []))]
    assert not stale, "CONTRACT entries whose file no longer uses them (drop the file, or the entry):\n  " + \
        "\n  ".join(stale)


def test_the_scanner_sees_each_kind_of_use():
    """So that the two tests above cannot pass on a scanner that sees nothing."""
    source = '''
import os
import ray
import ray.train.v2._internal.constants
import torch
from ray._private import services
from ray.tune import Callback
from ray.train import UserCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

class Lean(DataParallelTrainer):
    def _create_default_callbacks(self):
        return super()._create_default_callbacks()

class Relay(UserCallback):
    def after_report(self, run_context, metrics, checkpoint):
        pass

class Progress(Callback):
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._own = trial.temporary_state
    def _helper(self):
        return self._own, handle._actor_id, handle.__ray_ready__, torch._dynamo, self.__class__

os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = os.environ["RAY_ADDRESS"] + os.environ["RAY_BAN_FAULT"]
'''
    found = scan(source, "probe.py", defined_names([ast.parse(source)]))
    assert set(found) == {
        "ray.train.v2._internal.constants:", "ray._private:services",
        "ray.train.v2.api.data_parallel_trainer:DataParallelTrainer", "._create_default_callbacks", ".after_report",
        ".temporary_state", "._actor_id", ".__ray_ready__", "$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    }, sorted(found)
