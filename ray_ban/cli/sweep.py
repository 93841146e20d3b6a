"""``python -m ray_ban.sweep TABLE|FILE``: train a paper table's generation chains with Ray Tune.

One Tune run: every distinct generation-0 model (teachers and label-only baselines, each trained
once however many chains share it) and every distillation chain (one trial = one chain = one Ray
Train run), each chain released as soon as its own teacher is stored (``release.TeacherFirst``).
Results go to ``<out>/<sweep>/results.parquet`` and ``table.md``.
Exit codes: 0 success, 1 a chain failed (the others still finish), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from ray_ban.config import schema, spaces
from ray_ban.config.options import DEFAULTS, SweepOptions
from ray_ban.config.spaces import SpaceError, SweepPlan
from ray_ban.errors import DataError, UsageError, one_line
from ray_ban.orchestration.sweep import EXIT_OK

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (naming --help) and exit code 2, like all bad input."""

    def error(self, message: str):  # type: ignore[override]
        print(f"ray-ban: error: {one_line(message)}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """The command line: a ``SweepOptions``' fields (``SweepOptions.from_values``) and ``--list``/``--schema``."""
    parser = OneLineParser(prog="python -m ray_ban.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", help="a table name (see --list) or a path to a search-space YAML file")
    parser.add_argument("--list", action="store_true", help="list the shipped tables and exit")
    parser.add_argument("--schema", action="store_true",
                        help="print the JSON Schema of a search-space file (for an editor's completion and checks) and exit")
    parser.add_argument("--preset", default=DEFAULTS.preset, help="named preset of the space (paper, smoke, ...)")
    parser.add_argument("--dataset", help="override the dataset: cifar10, cifar100, parquet:<dir or URI>, synthetic, synthetic-100")
    parser.add_argument("--label-column", help="the label column of a parquet: dataset (default: label, else fine_label, else the only one)")
    parser.add_argument("--data-root", help="folder holding torchvision dataset files")
    parser.add_argument("--download", action="store_true", help="download torchvision datasets if missing")
    parser.add_argument("--out", "--storage", dest="out", default=DEFAULTS.out,
                        help="where the sweep writes <out>/<sweep>/: a folder (local or NFS) or a storage URI "
                             "(s3://bucket/runs, gs://...); default ./runs")
    parser.add_argument("--generations", type=int, help="override the number of distilled generations of every chain")
    parser.add_argument("--seeds", help="seeds and inclusive ranges, e.g. 0-4 or 0-2,7 (each seed is one more sample "
                                         "of every cell)")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-parallel workers per chain")
    parser.add_argument("--cpus-per-worker", type=float,
                        help="CPUs reserved per worker (default: the preset's resources.cpus_per_worker, else 1)")
    parser.add_argument("--gpus-per-worker", type=gpu_amount, default=DEFAULTS.gpus_per_worker,
                        help="GPUs per worker: auto (1 when the cluster has or can scale to GPU nodes, else 0), or a "
                             "number; a fraction packs one-worker chains on a GPU")
    parser.add_argument("--max-concurrent", type=int,
                        help="chains trained at once (default: as many as the cluster can scale to)")
    parser.add_argument("--max-failures", type=int, default=DEFAULTS.max_failures,
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
    parser.add_argument("--teachers", help="the teacher bank: a folder or storage URI of finished generation-0 models "
                                           "that every sweep reuses instead of training them (default "
                                           "~/.cache/ray-ban/teachers for a local run, none on a joined cluster; "
                                           "'none' turns it off)")
    plan = parser.add_argument_group("the --dry-run plan in GPU-hours")
    plan.add_argument("--gpus", type=int, help="GPUs to plan the wall time for (default: the cluster's, else this "
                                               "machine's, else 1)")
    plan.add_argument("--gpu-price", type=float, help="dollars per GPU-hour, for the plan's cost")
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


def plan_from_args(args: SweepOptions) -> SweepPlan:
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
            overrides["seeds"] = schema.parse_seeds(args.seeds)
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


def with_search(plan: SweepPlan, args: SweepOptions) -> SweepPlan:
    """The plan with its validated search (file section, preset and command line merged), if any."""
    from dataclasses import replace

    from ray_ban.config import search as searching

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
    from ray_ban.config.dataset_names import is_text

    if not plan.validation_size and not is_text(plan.dataset):  # a text corpus has its own validation split
        raise UsageError(f"{plan.source}: a search selects on a validation split held out from train, and this plan has "
                         "none: set validation_size (e.g. validation_size: 5000)")
    return replace(plan, search=parsed.to_dict())


def validate_plan(plan: SweepPlan, args: SweepOptions) -> None:
    """Everything a run needs, checked before any training: data, architectures, teacher/student pairs."""
    import torch

    from ray_ban import models  # torch is imported only once the space itself is valid
    from ray_ban.data import check_dataset, num_classes_of

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
    if (local and not args.dry_run and args.gpus_per_worker != "auto" and args.gpus_per_worker > 0
            and torch.cuda.device_count() == 0):  # a dry run may plan GPUs this machine does not have
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
        from ray_ban.config.search import Search

        search = Search(**plan.search)
        count = search.trials()
        lines[2] = (f"search template: {plan.chains[0].chain_id}; its teacher is trained once, then every trial trains "
                    "its own chain of students with the values it draws")
        lines.append(f"search: {count} chains ({search.search_alg} search, {search.scheduler} scheduler, selected on "
                     f"{search.metric}) over " + ", ".join(f"{k}={v}" for k, v in search.space.items()))
    from ray_ban.cli.paper_counts import parameter_lines  # builds on the meta device: torch, as validate_plan already imported

    lines.extend(parameter_lines(plan))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """argparse -> ``SweepOptions`` -> the Python API's ``prepared``/``sweep``; the exit code."""
    from ray_ban import api

    args = parse_args(argv)
    try:
        if args.list:
            for name in spaces.table_names():
                print(name)
            return EXIT_OK
        if args.schema:
            print(json.dumps(schema.json_schema(), indent=2))
            return EXIT_OK
        if not args.table:
            raise UsageError("name a table (see --list) or a search-space file, e.g. python -m ray_ban.sweep table5 --preset smoke")
        options = SweepOptions.from_values(args)
        if options.dry_run:
            from ray_ban.cli.gpu_plan import plan_lines

            plan = api.prepared(options)
            print(describe_plan(plan))
            print("\n" + "\n".join(plan_lines(plan, options)))
            return EXIT_OK
        # called in a process that already holds a Ray session (a notebook's, a test's): join it and leave
        # the process's output alone; otherwise the CLI owns the process and quiets Ray's output
        joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        outcome, _ = api.sweep(options, own_process=not joined)
        return outcome.code
    except (SpaceError, DataError, UsageError) as error:
        print(f"ray-ban: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
