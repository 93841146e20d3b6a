"""``python -m ray_ban.sweep TABLE|FILE``: train a paper table's generation chains with Ray Tune.

One Tune run: every distinct generation-0 model (teachers and label-only baselines, each trained
once however many chains share it) and every distillation chain (one trial = one chain = one Ray
Train run), each chain released as soon as its own teacher is stored (``release.TeacherFirst``).
Results go to ``<out>/<sweep>/results.parquet`` and ``table.md``.
Exit codes: 0 success, 1 a chain failed (the others still finish), 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

from . import spaces
from .data import DataError, check_dataset, num_classes_of
from .spaces import SpaceError, SweepPlan, Training
from .store import RunStore, is_uri, join

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad input found before anything is trained; reported as one line with exit code 2."""


def one_line(error: object) -> str:
    """A message as one terminal line: control characters and line breaks inside it (from a user's YAML
    keys, say) are shown escaped, as Python would write them."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in str(error))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (naming --help) and exit code 2, like all bad input."""

    def error(self, message: str):  # type: ignore[override]
        print(f"ray-ban: error: {one_line(message)}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ray_ban.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", help="a table name (see --list) or a path to a search-space YAML file")
    parser.add_argument("--list", action="store_true", help="list the shipped tables and exit")
    parser.add_argument("--preset", default="paper", help="named preset of the space (paper, smoke, ...)")
    parser.add_argument("--dataset", help="override the dataset: cifar10, cifar100, parquet:<dir or URI>, synthetic, synthetic-100")
    parser.add_argument("--label-column", help="the label column of a parquet: dataset (default: label, else fine_label, else the only one)")
    parser.add_argument("--data-root", help="folder holding torchvision dataset files")
    parser.add_argument("--download", action="store_true", help="download torchvision datasets if missing")
    parser.add_argument("--out", "--storage", dest="out", default="./runs",
                        help="where the sweep writes <out>/<sweep>/: a folder (local or NFS) or a storage URI "
                             "(s3://bucket/runs, gs://...); default ./runs")
    parser.add_argument("--generations", type=int, help="override the number of distilled generations of every chain")
    parser.add_argument("--seeds", help="seeds and inclusive ranges, e.g. 0-4 or 0-2,7 (each seed is one more sample "
                                         "of every cell)")
    parser.add_argument("--workers", type=int, default=1, help="data-parallel workers per chain")
    parser.add_argument("--cpus-per-worker", type=float,
                        help="CPUs reserved per worker (default: the preset's resources.cpus_per_worker, else 1)")
    parser.add_argument("--gpus-per-worker", type=gpu_amount, default="auto",
                        help="GPUs per worker: auto (1 when the cluster has or can scale to GPU nodes, else 0), or a "
                             "number; a fraction packs one-worker chains on a GPU")
    parser.add_argument("--max-concurrent", type=int,
                        help="chains trained at once (default: as many as the cluster can scale to)")
    parser.add_argument("--max-failures", type=int, default=3,
                        help="worker-group restarts per chain after errors (-1: unlimited); node preemptions "
                             "(spot reclaims) are retried without limit and not counted")
    parser.add_argument("--address", help="an existing Ray cluster ('auto' or host:port); default: start a local one")
    parser.add_argument("--cluster-config",
                        help="the autoscaler's cluster YAML, for clusters whose autoscaler does not report its node "
                             "types (autoscaler v1); default ~/ray_bootstrap_config.yaml where it exists")
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --out, skipping finished models")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of this sweep first")
    parser.add_argument("--dry-run", action="store_true", help="validate everything and print the plan; train nothing")
    parser.add_argument("--compile", action="store_true", help="torch.compile the students")
    group = parser.add_argument_group("hyperparameter search (or a search: section in the file)")
    group.add_argument("--search", action="append", default=[], metavar="NAME=SPEC",
                       help="search a parameter, e.g. lr=loguniform:0.02:0.2 or label_weight=grid:0,0.5,1 (repeatable)")
    group.add_argument("--num-samples", type=int, help="trials to sample (times every grid point)")
    group.add_argument("--search-alg", help="random, grid or optuna (TPE)")
    group.add_argument("--scheduler", help="fifo, or asha to stop poor chains early")
    return parser.parse_args(argv)


def gpu_amount(text: str) -> str | float:
    """``auto`` or a non-negative number of GPUs per worker (argparse type)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus-per-worker takes auto or a number, got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--gpus-per-worker must be auto or >= 0, got '{text}'")
    return value


def plan_from_args(args: argparse.Namespace) -> SweepPlan:
    """Load the space with the preset and command-line overrides applied."""
    overrides: dict = {}
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.label_column:
        overrides["label_column"] = args.label_column
    if args.generations is not None:
        if args.generations < 1:
            raise UsageError(f"--generations must be a positive integer, got {args.generations}")
        overrides["generations"] = args.generations
    if args.seeds is not None:
        try:
            overrides["seeds"] = spaces.parse_seeds(args.seeds)
        except ValueError as error:
            raise UsageError(f"--seeds must be comma-separated integers or ranges such as 0-4 or 0-2,7, got "
                             f"'{args.seeds}': {error}") from None
    plan = spaces.load(args.table, args.preset, overrides)
    plan = with_search(plan, args)
    if args.cpus_per_worker is None:
        args.cpus_per_worker = float(plan.resources.get("cpus_per_worker", 1.0))
    for name in ("workers", "cpus_per_worker"):
        value = getattr(args, name)
        if value < 1e-9:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.max_failures < -1:
        raise UsageError(f"--max-failures must be -1 (unlimited) or a count >= 0, got {args.max_failures}")
    if args.workers > 1 and args.gpus_per_worker != "auto" and 0 < args.gpus_per_worker < 1:
        raise UsageError(f"--workers {args.workers} with --gpus-per-worker {args.gpus_per_worker:g} would put several "
                         "NCCL ranks of one chain on one GPU, which NCCL refuses: use whole GPUs per worker, or "
                         "--workers 1 to pack chains")
    if args.gpus_per_worker != "auto" and args.gpus_per_worker > 1 and args.gpus_per_worker != int(args.gpus_per_worker):
        raise UsageError(f"--gpus-per-worker {args.gpus_per_worker:g}: a worker uses one device; use 1, or a fraction "
                         "below 1 to pack chains")
    return plan


def with_search(plan: SweepPlan, args: argparse.Namespace) -> SweepPlan:
    """The plan with its validated search (file section, preset and command line merged), if any."""
    from dataclasses import replace

    from . import search as searching

    options = {"num_samples": args.num_samples, "search_alg": args.search_alg, "scheduler": args.scheduler}
    raw = searching.merge_cli(plan.search or None, args.search, options)
    if not raw:
        return plan
    chain = searching.chain_to_search(plan)
    try:
        parsed = searching.parse_search(raw, plan.source, chain, plan.recipe_for(chain))
    except SpaceError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a shape the checks did not foresee
        raise SpaceError(f"{plan.source}: search: not a valid search section ({type(error).__name__}: {error}); "
                         "see search_spaces/banl-search.yaml") from None
    from .data import is_text

    if not plan.validation_size and not is_text(plan.dataset):  # a text corpus has its own validation split
        raise UsageError(f"{plan.source}: a search selects on a validation split held out from train, and this plan has "
                         "none: set validation_size (e.g. validation_size: 5000)")
    return replace(plan, search=parsed.to_dict())


def validate_plan(plan: SweepPlan, args: argparse.Namespace) -> None:
    """Everything a run needs, checked before any training: data, architectures, teacher/student pairs."""
    import torch

    from . import models  # torch is imported only once the space itself is valid

    check_dataset(plan.dataset, args.data_root, args.download, plan.label_column)
    classes = num_classes_of(plan.dataset) or 10
    checked = set()
    for chain in plan.chains:
        for training in chain.trainings:
            if training.architecture in checked:
                continue
            try:
                with torch.device("meta"):  # shapes only: instant even for 80M-parameter students
                    models.build(training.architecture, classes, **training.model_kwargs)
            except (ValueError, TypeError) as error:
                raise UsageError(f"{plan.source}: row {chain.row}, chain {chain.name}: {error}") from None
            checked.add(training.architecture)
        pairs = zip(chain.trainings[:-1], chain.generations) if chain.generations else ()
        for teacher, student in pairs:
            try:
                models.check_pair(teacher.architecture, student.architecture, classes, **student.model_kwargs)
            except ValueError as error:
                raise UsageError(f"{plan.source}: row {chain.row}, chain {chain.name}: {error}") from None
    for chain in plan.chains:
        batch_size = plan.recipe_for(chain).batch_size
        if batch_size % args.workers:
            raise UsageError(f"batch_size {batch_size} (row {chain.row}) is not divisible by --workers {args.workers}; "
                             "choose a divisor")
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if local and args.gpus_per_worker != "auto" and args.gpus_per_worker > 0 and torch.cuda.device_count() == 0:
        # caught before anything is written; a remote cluster is checked once Ray has joined it
        raise UsageError(f"--gpus-per-worker {args.gpus_per_worker:g} asks for GPUs but this machine has none (local Ray "
                         "cluster): drop --gpus-per-worker or pass --address of a cluster with GPU nodes")


def describe_plan(plan: SweepPlan) -> str:
    """The dry-run summary: chains, generations and the trainings they cost."""
    roots = plan.roots()
    distilled = sum(len(c.generations) for c in plan.chains)
    lines = [f"sweep {plan.name} ({plan.preset} preset) from {plan.source}",
             f"dataset {plan.dataset}, {plan.recipe.epochs} epochs per model, seeds {list(plan.seeds)}",
             f"{len(plan.chains)} chains; {len(roots)} generation-0 models (teachers, baselines, independent models; each trained once) "
             f"+ {distilled} distilled generations = {len(roots) + distilled} trainings"]
    for chain in plan.chains:
        if chain.generations:
            steps = " -> ".join(f"gen{t.generation} {t.architecture} [{t.loss}]" for t in chain.generations)
            lines.append(f"  {chain.chain_id}: teacher {chain.root.architecture} -> {steps}"
                         + (f"; ensembles {', '.join(chain.ensembles)}" if chain.ensembles else "")
                         + (f"; {len(chain.independent)} independent [label]" if chain.independent else ""))
        else:
            lines.append(f"  {chain.chain_id}: baseline {chain.root.architecture} [label]")
    if plan.search:
        from .search import Search

        search = Search(**plan.search)
        count = search.trials()
        lines[2] = (f"search template: {plan.chains[0].chain_id}; its teacher is trained once, then every trial trains "
                    "its own chain of students with the values it draws")
        lines.append(f"search: {count} chains ({search.search_alg} search, {search.scheduler} scheduler, selected on "
                     f"{search.metric}) over " + ", ".join(f"{k}={v}" for k, v in search.space.items()))
    from .paper_counts import parameter_lines  # builds on the meta device: torch, as validate_plan already imported

    lines.extend(parameter_lines(plan))
    return "\n".join(lines)


def prepare_run_dir(store, plan: SweepPlan, resume: bool, overwrite: bool) -> None:
    """Create or reuse the run folder (local or in storage); refuse to mix another sweep's results into it."""
    import pyarrow as pa
    from pyarrow.fs import FileType

    where = store.location
    identity = sweep_identity(plan)
    replace_hint = "choose another --out" if store.remote else "pass --overwrite to replace it, or choose another --out"
    try:
        kind = store.fs.get_file_info(store.base).type
        has_manifest = kind == FileType.Directory and store.exists("sweep.json")
    except (OSError, pa.ArrowException) as error:
        raise UsageError(f"cannot read {where} ({_first_line(error)}): check the path or the storage URI and its "
                         "credentials") from None
    if has_manifest and not overwrite:
        try:
            existing = store.read_json("sweep.json").get("identity", {})
        except (OSError, ValueError, AttributeError):
            existing = {"name": "unreadable sweep.json"}
        if existing != identity:  # another sweep's results: never mixed in, never replaced silently
            differs = ", ".join(k for k in sorted(set(identity) | set(existing)) if identity.get(k) != existing.get(k))
            if resume:
                raise UsageError(f"{where} holds another sweep ({existing.get('name')}, preset {existing.get('preset')}; "
                                 f"differs in {differs}): --resume only continues the same sweep; {replace_hint}")
            raise UsageError(f"{where} already holds another sweep ({existing.get('name')}, preset "
                             f"{existing.get('preset')}; differs in {differs}): {replace_hint}")
        # the same sweep again (after a crash, or to finish it): continue it, as --resume would
    elif kind == FileType.File or (kind == FileType.Directory and not store.is_empty() and not overwrite):
        raise UsageError(f"{where} exists and is not a ray-ban run folder: "
                         + ("choose another --out" if store.remote else "choose another --out or pass --overwrite"))
    try:
        if overwrite:
            store.clear()
        store.fs.create_dir(store.base, recursive=True)
        store.write_bytes(".write-test", b"ok")
        store.delete(".write-test")
        store.write_json("sweep.json", {"identity": identity, "plan": plan.to_dict()})
    except (OSError, pa.ArrowException) as error:
        raise UsageError(f"cannot write to {where} ({_first_line(error)}): choose a writable --out") from None


def sweep_identity(plan: SweepPlan) -> dict:
    """What makes two runs the same sweep: its name, preset, dataset and a hash of the models it trains.

    Never a file path: under ``ray job submit --working-dir`` the space file lives in a per-upload
    folder, so a path would refuse the same sweep after any code change or on a new cluster. Every
    model key is a hash of what determines that model (architecture, loss, seed, teacher, recipe,
    data), so the sorted keys, with the search section, cover every option that changes results, and
    a new version of ray-ban that plans the same models continues the sweep. Resources (workers,
    GPUs) change where models train, not which."""
    import hashlib
    import json

    content = {"models": sorted(t.key for t in plan.trainings()), "search": plan.search}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"name": plan.name, "preset": plan.preset, "dataset": plan.dataset, "content_sha256": digest}


def _first_line(error: BaseException) -> str:
    """An OS or storage error as a short phrase: its strerror, else its first line, else its type."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return getattr(error, "strerror", None) or text.splitlines()[0]


def _quiet_ray_logs(log_path: Path) -> None:
    """Send Ray's own log records to <run>/logs/ray.log so the terminal shows only chain progress."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


def trial_config(plan: SweepPlan, chain_id: str, trainings: list[Training], teachers: list[Training],
                 location: str, args: argparse.Namespace, metric: str, board_runs: dict) -> dict:
    """The plain-data config of one trial (one chain); everything a worker needs, no objects.

    ``board_runs`` is ``tensorboard_runs.plan_runs(plan)``, computed once per sweep."""
    from .tensorboard_runs import board_root

    return {
        "chain_id": chain_id,
        "trainings": [t.__dict__ for t in trainings],
        "teachers": [t.__dict__ for t in teachers],
        "recipe": (plan.recipe_of(trainings[0].key) if trainings else plan.recipe).to_dict(),
        "data": {**plan.data_config(), "dataset": absolute_dataset(plan.dataset)},
        "data_root": str(Path(args.data_root).resolve()) if args.data_root else None,
        "download": args.download,
        "run_dir": location,
        "resources": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                      "gpus_per_worker": args.gpus_per_worker,
                      # Train's placement-group cleaner needs the dashboard, which a local run does not start
                      "group_cleaner": ray_address(args) != "local"},
        "max_failures": args.max_failures,
        "metric": metric,
        "compile": args.compile,
        "board": {"root": board_root(location), "runs": {t.key: board_runs[t.key] for t in trainings}},
    }


def ray_address(args: argparse.Namespace) -> str:
    """The Ray cluster to join: --address, else $RAY_ADDRESS, else 'local' (a private one on this machine)."""
    return args.address or os.environ.get("RAY_ADDRESS") or "local"


def run_location(out: str, name: str) -> str:
    """``<out>/<sweep>``: an absolute local path (workers run in Ray's own folders) or a storage URI."""
    if is_uri(out):
        return join(out, name)
    return str((Path(out).expanduser() / name).resolve())


def absolute_dataset(spec: str) -> str:
    """Train workers run in Ray's own folders: a relative parquet:DIR must become absolute first (a URI stays as it is)."""
    if spec.startswith("parquet:") and not is_uri(spec.split(":", 1)[1]):
        return "parquet:" + str(Path(spec.split(":", 1)[1]).expanduser().resolve())
    return spec


def size_sweep(args: argparse.Namespace, chains: int) -> tuple[int, str, bool]:
    """Settle --gpus-per-worker auto, refuse a chain no node type can ever hold, and size the sweep.

    Judged against what the cluster can scale to (``capacity.discover``), not what is up now; on an
    autoscaling cluster the whole sweep's workers are requested at once, so nodes start together.
    Returns (chains at once, the start-up line's description of the resources, whether the autoscaler
    was asked for them)."""
    from . import capacity as cap
    from .chain import DRIVER_RESOURCE

    found = cap.discover(args.cluster_config)
    gpus_total = found.total("GPU")
    if args.gpus_per_worker == "auto":
        args.gpus_per_worker = 1.0 if gpus_total > 0 else 0.0
        gpu_word = f"auto: {'1 GPU' if args.gpus_per_worker else 'no GPU'} per worker"
    else:
        gpu_word = f"{args.gpus_per_worker:g} GPU per worker"
    bundle = {"CPU": args.cpus_per_worker, "GPU": args.gpus_per_worker}
    if args.gpus_per_worker > 0 and gpus_total == 0:
        raise UsageError(f"--gpus-per-worker {args.gpus_per_worker:g} asks for GPUs but the Ray cluster has none and "
                         f"can launch none ({found.source}); drop --gpus-per-worker or add GPU node types")
    types = found.node_types
    if found.source == "nodes up now" and not any(t.resources.get(DRIVER_RESOURCE, 0) >= 1 for t in types):
        # each chain's driver then takes 0.01 CPU (see chain.trainable): leave it room on the live nodes
        types = tuple(cap.NodeType(t.name, {**t.resources, "CPU": t.resources.get("CPU", 0) - 0.01}, t.max_count)
                      for t in types)
    fits = cap.chains_that_fit(cap.Capacity(types, found.source), bundle, args.workers)
    if fits < 1:
        largest = cap.largest_node(found)
        raise UsageError(f"one chain needs {args.workers} workers of {args.cpus_per_worker:g} CPUs and "
                         f"{args.gpus_per_worker:g} GPUs but no node type can hold them (largest node: "
                         f"{largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs; {found.source}); lower "
                         "--workers, --cpus-per-worker or --gpus-per-worker")
    at_once = min(args.max_concurrent or fits, max(1, chains))
    where = "can scale to" if found.autoscaling else "has"
    line = f"{gpu_word}; the cluster {where} {fits} such chains at once ({found.source})"
    if found.autoscaling:
        cap.request_sweep(bundle, args.workers, at_once)
    return at_once, line, found.autoscaling


def run_phase(name: str, configs: list[dict], settled: set[str], store, max_concurrent: int,
              progress) -> dict[str, Optional[str]]:
    """One Tune run over trial configs released by ``TeacherFirst``; returns chain_id -> error (None: success)."""
    import ray
    from ray import tune

    from .chain import trainable
    from .placement import ReleaseStoppedChains
    from .release import TeacherFirst

    if not configs:
        return {}
    tuner = tune.Tuner(
        trainable(ray.cluster_resources()),
        tune_config=tune.TuneConfig(
            search_alg=TeacherFirst(configs, settled),
            num_samples=len(configs),
            max_concurrent_trials=max_concurrent,
            trial_name_creator=lambda trial: trial.config["chain"]["chain_id"],
            trial_dirname_creator=lambda trial: trial.config["chain"]["chain_id"],
        ),
        run_config=tune.RunConfig(name=name, storage_path=store.path("ray"), storage_filesystem=store.fs, verbose=0,
                                  callbacks=[progress, ReleaseStoppedChains()]),
    )
    outcome = {}
    for result in tuner.fit():
        chain_id = result.config["chain"]["chain_id"]
        outcome[chain_id] = None if result.error is None else _trial_error_line(result.error)
    return outcome


def _trial_error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    failed = [line for line in text if "ChainFailed" in line or line.startswith("chain ")]
    return (failed[-1] if failed else text[-1] if text else repr(error)).split("ChainFailed: ")[-1]


@dataclass
class SweepOutcome:
    """What a finished sweep leaves: its results table, chain_id -> failure (None: success), the exit code."""

    table: Any
    failures: dict
    code: int


def run_sweep(plan: SweepPlan, args: Any, store, own_process: bool = True,
              stream: Optional[TextIO] = None) -> SweepOutcome:
    """Start or join Ray, train every model (chains released as their teachers are stored), write results.

    ``own_process`` (the CLI): Ray's output goes to the run's ray.log through file descriptors 1 and 2
    and Ray's loggers, and the terminal shows ray-ban's lines only. Otherwise (``ray_ban.run``) nothing
    of the caller's process is touched: a Ray session the caller started is joined and left running,
    and ray-ban's lines go to ``stream``."""
    import ray

    from .chain import DRIVER_RESOURCE
    from .generations import AUDIT_ENV, FAULT_ENV
    from .results import write_results
    from .tensorboard_runs import board_root, write_ensemble_runs

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0
    started = time.perf_counter()
    address = ray_address(args)
    # The Train controller polls its workers every 2 s by default; a chain of short generations spends
    # much of its time waiting on that poll (measured: 19 s -> 11 s for a trivial fit at 0.25 s).
    env_vars = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"),
                "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    for name in (FAULT_ENV, AUDIT_ENV):
        if name in os.environ:
            env_vars[name] = os.environ[name]
    # On a cluster the workers' output (tracebacks, warnings) reaches ray.log through the driver; a local
    # run's workers write to Ray's session folder on this machine, and skip that per-line relay.
    init_kwargs = {"log_to_driver": address != "local", "logging_level": logging.WARNING, "include_dashboard": False,
                   "runtime_env": {"env_vars": env_vars}}
    if address == "local":
        # One machine cannot be pre-empted piecemeal: skip Train's per-chain PreemptionWatcher actor
        # (one process fewer to start for every chain; clusters keep it for spot nodes).
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        init_kwargs["num_cpus"] = os.cpu_count()
        init_kwargs["resources"] = {DRIVER_RESOURCE: 10_000}
    # Ray's own logs stay on this machine: in the run folder, or beside it for a storage URI (uploaded
    # every LOG_UPLOAD_S while the sweep runs, and at the end)
    log_path = (Path(tempfile.gettempdir()) / "ray-ban-logs" / plan.name if store.remote else Path(store.base) / "logs") / "ray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    joined = ray.is_initialized()  # the caller's own session (a notebook, a script): used as it is
    stream = stream or sys.stdout
    with contextlib.ExitStack() as stack:
        terminal = stream
        if own_process:
            log_file = stack.enter_context(open(log_path, "a"))
            terminal = stack.enter_context(_ray_output_to(log_file))
        stack.enter_context(_uploading(log_path, store))
        if not joined:
            ray.init(address=address, **init_kwargs)
        if own_process:
            _quiet_ray_logs(log_path)  # after ray.init, which installs its own handlers
        failures = _run_phases(plan, args, store, log_path, terminal, shutdown=not joined)
    table = write_results(plan, store)
    write_ensemble_runs(table.to_pylist(), board_root(store.location))
    _write_report(store.location)
    code = _report(plan, table, failures, store, started, stream)
    if plan.search:
        from .search_phase import write_best

        write_best(plan, store, stream)
    return SweepOutcome(table, failures, code)


LOG_UPLOAD_S = 30.0


@contextlib.contextmanager
def _uploading(log_path: Path, store):
    """For a storage URI, copy ray.log to ``logs/ray.log`` every LOG_UPLOAD_S and once at the end, so a
    running or crashed sweep's log can be read from the bucket (a local run folder holds it already)."""
    import threading

    if not store.remote:
        yield
        return
    stop = threading.Event()

    def upload() -> None:
        try:
            store.write_bytes("logs/ray.log", log_path.read_bytes())
        except Exception as error:  # noqa: BLE001 - a log upload must never fail the sweep
            logging.getLogger("ray_ban").warning("ray.log not uploaded: %s", error)

    def loop() -> None:
        while not stop.wait(LOG_UPLOAD_S):
            upload()

    thread = threading.Thread(target=loop, daemon=True, name="ray-log-upload")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=LOG_UPLOAD_S)
        upload()


def use_token_auth_if_available() -> None:
    """Send Ray 2.60's auth token when joining a cluster, if one is at hand and the user set no mode.

    A ``ray start`` head with token authentication refuses drivers that do not send it, and drivers
    send it only with RAY_AUTH_MODE=token (seen on 2.60), which Ray reads when it is imported."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _write_report(run_dir: str) -> None:
    """report.md and its figures; a plotting failure must not fail a sweep whose results are written."""
    from .report import write_report

    try:
        write_report(run_dir)
    except Exception as error:  # noqa: BLE001  (results.parquet is already safe; say so in one line)
        print(f"ray-ban: warning: report not written ({type(error).__name__}: {error}); "
              f"run python -m ray_ban.report {run_dir}", file=sys.stderr)


@contextlib.contextmanager
def _ray_output_to(log_file):
    """Point file descriptors 1 and 2 at the run's log while Ray runs (its C++ output, raylet warnings
    and Tune banners go there); yields a stream to the real terminal for ray-ban's own progress lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    for fd in (1, 2):
        os.dup2(log_file.fileno(), fd)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.close()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def _run_phases(plan: SweepPlan, args: Any, store, log_path: Path, terminal, shutdown: bool = True) -> dict:
    """Every model in one scheduling pass (a search: its teacher, then its trials); chain_id -> error or None."""
    import ray

    from . import capacity
    from . import search as searching
    from .progress import ChainProgress
    from .relay import start_relay
    from .search_phase import run_search
    from .tensorboard_runs import plan_runs

    requested = False
    try:
        relay = start_relay()  # noqa: F841 - the handle is held until every trial has reported
        metric = "val_error" if plan.validation_size else "test_error"
        progress = ChainProgress(plan, terminal)
        board_runs = plan_runs(plan)  # TensorBoard run names and hyperparameters of every training
        roots = [t for t in ([searching.chain_to_search(plan).root] if plan.search else plan.roots())
                 if not store.is_done(t.key)]
        chains = [] if plan.search else [c for c in plan.distilled_chains()
                                         if not all(store.is_done(t.key) for t in c.generations)]
        max_concurrent, resources, requested = size_sweep(args, len(roots) + len(chains))  # settles GPUs: before configs
        root_configs = [trial_config(plan, f"gen0.{t.key}", [t], [], store.location, args, metric, board_runs)
                        for t in roots]
        chain_configs = [trial_config(plan, c.chain_id, list(c.generations), [c.root], store.location, args, metric,
                                      board_runs) for c in chains]
        what = f"a search of {searching.Search(**plan.search).trials()} chains" if plan.search else f"{len(plan.chains)} chain{'s' * (len(plan.chains) != 1)}"
        print(f"ray-ban: {plan.name}: {what}, up to {max_concurrent} at once; {resources}; Ray logs in {log_path}",
              file=terminal, flush=True)
        settled = {t.key for t in plan.trainings() if store.is_done(t.key)}
        if plan.search:
            failures = run_phase("generation0", root_configs, settled, store, max_concurrent, progress)
            chain = searching.chain_to_search(plan)
            base = trial_config(plan, chain.chain_id, [], [chain.root], store.location, args, plan.search["metric"],
                                board_runs)
            failures.update(run_search(plan, base, store, max_concurrent, progress))
            return failures
        return run_phase("sweep", root_configs + chain_configs, settled, store, max_concurrent, progress)
    finally:
        try:
            if requested:
                capacity.release_request()
        except Exception as error:  # noqa: BLE001 - the request only keeps idle nodes up; never fail the sweep
            logging.getLogger("ray_ban").warning("autoscaler request not withdrawn: %s", error)
        if shutdown:
            ray.shutdown()


def _report(plan: SweepPlan, table, failures: dict, store, started: float, stream: TextIO) -> int:
    """Print the paper-style table, each student against its teacher paired by seed, the failures; the exit code."""
    from .results import paper_table, teacher_student_lines

    print(paper_table(plan, table), file=stream)
    for line in teacher_student_lines(plan, table):
        print(f"ray-ban: paired by seed, {line}", file=stream)
    failed = {k: v for k, v in failures.items() if v}
    for chain_id, message in failed.items():
        print(f"ray-ban: FAILED {chain_id}: {message}", file=sys.stderr if stream is sys.stdout else stream)
    print(f"ray-ban: results in {store.uri('results.parquet')} ({table.num_rows} rows); "
          f"{time.perf_counter() - started:.0f} s", file=stream, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            for name in spaces.table_names():
                print(name)
            return EXIT_OK
        if not args.table:
            raise UsageError("name a table (see --list) or a search-space file, e.g. python -m ray_ban.sweep table5 --preset smoke")
        plan = plan_from_args(args)
        validate_plan(plan, args)
        if args.dry_run:
            print(describe_plan(plan))
            return EXIT_OK
        store = RunStore(run_location(args.out, plan.name))
        prepare_run_dir(store, plan, args.resume, args.overwrite)
    except (SpaceError, DataError, UsageError) as error:
        print(f"ray-ban: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if ray_address(args) != "local":
        use_token_auth_if_available()  # before Ray is imported: it reads the mode once, at import
    try:
        return run_sweep(plan, args, store).code
    except UsageError as error:
        print(f"ray-ban: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
