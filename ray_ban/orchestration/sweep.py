"""Running a sweep on Ray: start or join a cluster, size the sweep to what it can scale to, one Tune pass
over every model (chains released as their teachers are stored), results and report at the end.

The module itself imports no Ray (Ray is imported inside the functions), so the CLI can set Ray's
authentication mode before Ray is first imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional, TextIO

from ray_ban import log
from ray_ban.config.spaces import SweepPlan, Training
from ray_ban.errors import UsageError
from ray_ban.store import is_uri

EXIT_OK, EXIT_FAILED = 0, 1


def _quiet_ray_logs(log_path: Path) -> None:
    """Send Ray's own log records to <run>/logs/ray.log so the terminal shows only chain progress."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


def trial_config(plan: SweepPlan, chain_id: str, trainings: list[Training], teachers: list[Training],
                 location: str, args: Any, metric: str, board_runs: dict) -> dict:
    """The plain-data config of one trial (one chain); everything a worker needs, no objects.

    ``board_runs`` is ``tensorboard_runs.plan_runs(plan)``, computed once per sweep."""
    from ray_ban.results.tensorboard_runs import board_root

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
        "teacher_bank": getattr(args, "teacher_bank", None),  # bank_trial reuses or publishes generation-0 models
    }


def absolute_dataset(spec: str) -> str:
    """Train workers run in Ray's own folders: a relative parquet:DIR must become absolute first (a URI stays as it is)."""
    if spec.startswith("parquet:") and not is_uri(spec.split(":", 1)[1]):
        return "parquet:" + str(Path(spec.split(":", 1)[1]).expanduser().resolve())
    return spec


def size_sweep(args: Any, chains: int) -> tuple[int, str, bool]:
    """Settle --gpus-per-worker auto, refuse a chain no node type can ever hold, and size the sweep.

    Judged against what the cluster can scale to (``capacity.discover``), not what is up now; on an
    autoscaling cluster the whole sweep's workers are requested at once, so nodes start together.
    Returns (chains at once, the start-up line's description of the resources, whether the autoscaler
    was asked for them)."""
    from ray_ban.orchestration import capacity as cap
    from ray_ban.orchestration.chain import DRIVER_RESOURCE

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

    from ray_ban.orchestration.bank_trial import banked_trial
    from ray_ban.orchestration.chain import trainable
    from ray_ban.orchestration.placement import ReleaseStoppedChains
    from ray_ban.orchestration.release import TeacherFirst

    if not configs:
        return {}
    tuner = tune.Tuner(
        trainable(ray.cluster_resources(), banked_trial),
        tune_config=tune.TuneConfig(
            search_alg=TeacherFirst(configs, settled),
            num_samples=len(configs),
            max_concurrent_trials=max_concurrent,
            # a finished trial's process runs the next one: no process start and no imports of Tune, Train
            # and ray-ban for each chain. Safe here, where every trial runs to its end (no scheduler stops
            # one; an errored trial's process is never reused); a search's phase keeps fresh processes
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["chain"]["chain_id"],
            trial_dirname_creator=lambda trial: trial.config["chain"]["chain_id"],
        ),
        run_config=tune.RunConfig(name=name, storage_path=store.path("ray"), storage_filesystem=store.fs, verbose=0,
                                  callbacks=[progress, ReleaseStoppedChains()]),
    )
    return dict(trial_outcome(result) for result in tuner.fit())


def trial_outcome(result) -> tuple[str, Optional[str]]:
    """(chain_id, error line or None) of one finished trial. The chain is read off the trial's folder
    (``trial_dirname_creator``): a trial whose actor never ran (its node lost, its owner unreachable)
    has no config in its result."""
    chain_id = PurePosixPath(result.path).name
    return chain_id, None if result.error is None else _trial_error_line(result.error)


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
    of the caller's process is touched: a Ray session the caller started is joined and left running.
    ray-ban's lines are records of the ``ray_ban`` logger, shown on ``stream`` (stdout by default;
    ``False``: only through the caller's logging set-up) and appended to ray.log (``log.for_run``)."""
    import ray

    from ray_ban.results.tables import write_results
    from ray_ban.results.tensorboard_runs import board_root, write_ensemble_runs

    started = time.perf_counter()
    address = ray_address(args)
    # Ray's own logs stay on this machine: in the run folder, or beside it for a storage URI (uploaded
    # every LOG_UPLOAD_S while the sweep runs, and at the end)
    log_path = (Path(tempfile.gettempdir()) / "ray-ban-logs" / plan.name if store.remote else Path(store.base) / "logs") / "ray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    joined = ray.is_initialized()  # the caller's own session (a notebook, a script): used as it is
    with contextlib.ExitStack() as stack:
        stack.enter_context(_tune_settings())
        handler = stack.enter_context(log.for_run(sys.stdout if stream is None else stream, log_path))
        with contextlib.ExitStack() as ray_phase:
            if own_process:
                log_file = ray_phase.enter_context(open(log_path, "a"))
                # fds 1 and 2 now lead to ray.log: ray-ban's lines, errors too, go to the real terminal
                ray_phase.enter_context(_terminal_lines(handler, ray_phase.enter_context(_ray_output_to(log_file))))
            ray_phase.enter_context(_uploading(log_path, store))
            if not joined:
                ray.init(address=address, **ray_init_options(address))
            if own_process:
                _quiet_ray_logs(log_path)  # after ray.init, which installs its own handlers
            failures = _run_phases(plan, args, store, log_path, shutdown=not joined)
        table = write_results(plan, store)
        write_ensemble_runs(table.to_pylist(), board_root(store.location))
        _write_report(store.location)
        code = _report(plan, table, failures, store, started)
        if plan.search:
            from ray_ban.orchestration.search_phase import write_best

            write_best(plan, store)
    return SweepOutcome(table, failures, code)


# Tune's settings for a sweep, read from the environment when a Tuner fits: no per-trial CSV/JSON/TensorBoard
# files (results are the run store's), and the legacy reporter, silent at verbose=0 (the new one prints anyway)
TUNE_SETTINGS = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
# The logger of Tune's end-of-run analysis (``tune.ExperimentAnalysis``, built by every ``Tuner.fit``).
TUNE_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


class _NoResultFileWarning(logging.Filter):
    """Drops the analysis' warning that trials have no result.json or progress.csv: with ``TUNE_SETTINGS``
    Tune writes neither, so it came once per Tune run, with a FileNotFoundError for every trial."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def _tune_settings() -> Iterator[None]:
    """``TUNE_SETTINGS`` in the environment for one sweep only: a caller's own Tune runs after ``ray_ban.run``
    keep Tune's defaults (its result files and TensorBoard logs). A value the caller set is left as it is.
    For as long, Tune's analysis says nothing of the result files it was told not to write (its other
    records pass)."""
    added = {name: value for name, value in TUNE_SETTINGS.items() if name not in os.environ}
    analysis, quiet = logging.getLogger(TUNE_ANALYSIS_LOGGER), _NoResultFileWarning()
    os.environ.update(added)
    analysis.addFilter(quiet)
    try:
        yield
    finally:
        analysis.removeFilter(quiet)
        for name in added:
            os.environ.pop(name, None)


LOG_UPLOAD_S = 30.0


@contextlib.contextmanager
def _uploading(log_path: Path, store):
    """For a storage URI, copy ray.log to ``logs/ray.log`` every LOG_UPLOAD_S and once at the end, so a
    running or crashed sweep's log can be read from the bucket (a local run folder holds it already)."""

    if not store.remote:
        yield
        return
    stop = threading.Event()

    def upload() -> None:
        try:
            store.write_bytes("logs/ray.log", log_path.read_bytes())
        except Exception as error:  # noqa: BLE001 - a log upload must never fail the sweep
            log.get("sweep").warning("ray-ban: warning: ray.log not uploaded: %s", error)

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


AUTH_PROBE_S = 10.0  # how long the GCS of a cluster being joined may take to say whether it wants a token


def use_token_auth_if_required(address: str) -> None:
    """Send Ray's auth token when joining a cluster at ``address`` that requires one, and only then.

    A ``ray start`` head (2.59+) requires a token; drivers send it only with RAY_AUTH_MODE=token, and Ray
    turns that on by itself only for a cluster it finds (``auto``), never for an explicit address. Every
    local ``ray.init`` writes ``~/.ray/auth_token``, so a token at hand says nothing about the cluster:
    a driver in token mode that joins a cluster without authentication cannot be called back by its GCS,
    which then destroys every actor it owns (seen: all trials "cancelled before they started"). So the
    GCS is asked once, without a token; token mode is turned on only when it refuses. An address that
    does not answer within ``AUTH_PROBE_S`` is left to ray.init, which says so in its own words."""
    import ray
    from ray._raylet import Config

    from ray_ban.orchestration import auth_probe

    if "RAY_AUTH_MODE" in os.environ or ray.is_initialized() or address in ("local", "auto") or "://" in address:
        return
    try:
        asked = subprocess.run([sys.executable, "-m", auth_probe.__name__, address], capture_output=True,
                               timeout=AUTH_PROBE_S)
    except subprocess.TimeoutExpired:  # an address that does not answer takes far longer to fail
        return
    if asked.returncode == auth_probe.REFUSED:
        os.environ["RAY_AUTH_MODE"] = "token"  # for this process and the processes it starts
        Config.initialize("")  # Ray read the mode when it was imported: read it again


def _write_report(run_dir: str) -> None:
    """report.md and its figures; a plotting failure must not fail a sweep whose results are written."""
    from ray_ban.results.report import write_report

    try:
        write_report(run_dir)
    except Exception as error:  # noqa: BLE001  (results.parquet is already safe; say so in one line)
        log.get("sweep").warning(f"ray-ban: warning: report not written ({type(error).__name__}: {error}); "
                                 f"run python -m ray_ban.report {run_dir}")


@contextlib.contextmanager
def _terminal_lines(handler, terminal):
    """Point the terminal handler (if any) at ``terminal``, every level, for the block; then back."""
    if handler is None:
        yield
        return
    saved = handler.out, handler.errors
    handler.out, handler.errors = terminal, None
    try:
        yield
    finally:
        handler.out, handler.errors = saved


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


def _run_phases(plan: SweepPlan, args: Any, store, log_path: Path, shutdown: bool = True) -> dict:
    """Every model in one scheduling pass (a search: its teacher, then its trials); chain_id -> error or None."""
    import ray

    from ray_ban.orchestration import capacity
    from ray_ban.config import search as searching
    from ray_ban.orchestration.placement import stop_releasing
    from ray_ban.orchestration.progress import ChainProgress
    from ray_ban.orchestration.relay import start_relay
    from ray_ban.orchestration.search_phase import run_search
    from ray_ban.results.tensorboard_runs import plan_runs

    requested = False
    try:
        relay = start_relay()  # noqa: F841 - the handle is held until every trial has reported
        metric = "val_error" if plan.validation_size else "test_error"
        progress = ChainProgress(plan)
        board_runs = plan_runs(plan)  # TensorBoard run names and hyperparameters of every training
        roots = [t for t in ([searching.chain_to_search(plan).root] if plan.search else plan.roots())
                 if not store.is_done(t.key)]
        chains = [] if plan.search else [c for c in plan.distilled_chains()
                                         if not all(store.is_done(t.key) for t in c.generations)]
        max_concurrent, resources, requested = size_sweep(args, len(roots) + len(chains))  # settles GPUs: before configs
        root_configs = [trial_config(plan, f"gen0.{t.key}", [t], [], store.location, args, metric, board_runs)
                        for t in roots]
        chain_configs = [{**trial_config(plan, c.chain_id, list(c.generations), [c.root], store.location, args, metric,
                                         board_runs), "stopping": c.stopping} for c in chains]
        what = f"a search of {searching.Search(**plan.search).trials()} chains" if plan.search else f"{len(plan.chains)} chain{'s' * (len(plan.chains) != 1)}"
        log.get("sweep").info(f"ray-ban: {plan.name}: {what}, up to {max_concurrent} at once; {resources}; "
                              f"Ray logs in {log_path}")
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
            log.get("sweep").warning("ray-ban: warning: autoscaler request not withdrawn: %s", error)
        if shutdown:
            stop_releasing()  # no release thread may call Ray once it is down: that would start a new cluster
            ray.shutdown()


def _report(plan: SweepPlan, table, failures: dict, store, started: float) -> int:
    """Print the paper-style table, each student against its teacher paired by seed, the failures; the exit code."""
    from ray_ban.results.tables import paper_table, teacher_student_lines

    say = log.get("sweep")
    say.info(paper_table(plan, table))
    for line in teacher_student_lines(plan, table):
        say.info(f"ray-ban: paired by seed, {line}")
    failed = {k: v for k, v in failures.items() if v}
    for chain_id, message in failed.items():
        say.error(f"ray-ban: FAILED {chain_id}: {message}")
    say.info(f"ray-ban: results in {store.uri('results.parquet')} ({table.num_rows} rows); "
             f"{time.perf_counter() - started:.0f} s")
    return EXIT_FAILED if failed else EXIT_OK


def ray_init_options(address: str = "local") -> dict:
    """``ray.init`` keyword arguments for a sweep's session at ``address`` ("local": a private one here).

    ``ray_ban.init_ray`` starts a session with them, so that successive sweeps in one process share it."""
    from ray_ban.audit import AUDIT_ENV
    from ray_ban.orchestration.chain import DRIVER_RESOURCE
    from ray_ban.orchestration.chain_worker import FAULT_ENV

    # The Train controller polls its workers every 2 s by default; a chain of short generations spends
    # much of its time waiting on that poll (measured: 19 s -> 11 s for a trivial fit at 0.25 s).
    env_vars = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"),
                "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    for name in (FAULT_ENV, AUDIT_ENV):
        if name in os.environ:
            env_vars[name] = os.environ[name]
    # On a cluster the workers' output (tracebacks, warnings) reaches ray.log through the driver; a local
    # run's workers write to Ray's session folder on this machine, and skip that per-line relay.
    options = {"log_to_driver": address != "local", "logging_level": logging.WARNING, "include_dashboard": False,
               "runtime_env": {"env_vars": env_vars}}
    if address == "local":
        # One machine cannot be pre-empted piecemeal: skip Train's per-chain PreemptionWatcher actor
        # (one process fewer to start for every chain; clusters keep it for spot nodes).
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        options["num_cpus"] = os.cpu_count()
        options["resources"] = {DRIVER_RESOURCE: 10_000}
    return options


def init_ray(address: str = "local", **ray_init_kwargs: Any) -> None:
    """``ray.init`` with a sweep's options (``ray_init_options``), ``ray_init_kwargs`` laid over them."""
    import ray

    ray.init(address=address, **{**ray_init_options(address), **ray_init_kwargs})


def ray_address(args: Any) -> str:
    """The Ray cluster to join: --address, else $RAY_ADDRESS, else 'local' (a private one on this machine)."""
    return args.address or os.environ.get("RAY_ADDRESS") or "local"
