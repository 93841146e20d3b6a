"""Search spaces: load a declarative YAML sweep, validate it, and expand it into chain specs.

A sweep file holds the dataset, the recipe, the paper table's rows (a teacher and the chains
distilled from it), the paper's numbers, and named presets (``paper``, ``smoke``). Loading returns
a ``SweepPlan``: plain dataclasses, no Ray, no torch. Every problem raises ``SpaceError`` with one
line naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from ray_ban.config.cell_refs import CELL_METRICS, parse_cell  # noqa: F401 (CELL_METRICS re-exported)
from ray_ban.config.dataset_names import is_text
from ray_ban.config.family_versions import bumped_versions
from ray_ban.config.loss_names import LOSS_NAMES, check_loss_params
from ray_ban.config.recipe import Recipe
from ray_ban.config.schema import SpaceFile, StoppingRule, first_problem

# the shipped tables are package data (also reached as ./search_spaces in a checkout): an installed
# wheel lists and loads them from any folder
SPACES_DIR = Path(str(resources.files("ray_ban") / "search_spaces"))
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SpaceError(ValueError):
    """A search space that cannot be used; the message is one line naming file, key and fix."""


@dataclass(frozen=True)
class Training:
    """One model to train: generation 0 (teacher or label-only baseline) or a distilled generation."""

    key: str
    architecture: str
    loss: str
    loss_params: dict
    seed: int
    generation: int
    role: str  # teacher | student | baseline | independent (a label-only twin of a chain's student)
    teacher_key: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    # sha256 of everything that determines the model (the key holds a 10-digit prefix of another hash
    # of it): what a teacher bank entry is checked against before it is reused
    digest: str = ""


@dataclass(frozen=True)
class Chain:
    """A generation chain of one table row: a root model and the generations distilled from it."""

    chain_id: str
    row: str
    name: str
    seed: int
    root: Training  # generation 0: the shared teacher, or the baseline itself
    generations: tuple[Training, ...]  # distilled generations 1..K (empty for a baseline)
    ensembles: dict  # name -> generations averaged, e.g. {"ens2": [1, 2]}
    recipe_overrides: dict = field(default_factory=dict)  # a row's own recipe values (Table 6's two recipes)
    # ``independent: k``: k label-only models of the student architecture with their own seeds, trained
    # once each like a teacher; their ensembles ind2..indk are the fair partners of Ens*2..Ens*k
    independent: tuple[Training, ...] = ()
    # ``generations: {max, patience, metric}``: the chain ends once ``patience`` generations in a row fail
    # to improve ``metric`` (a validation metric) on the best of its lineage so far; empty: all generations
    stopping: dict = field(default_factory=dict)

    @property
    def trainings(self) -> tuple[Training, ...]:
        """The lineage: root, then the generations distilled from it."""
        return (self.root, *self.generations)

    @property
    def all_trainings(self) -> tuple[Training, ...]:
        """The lineage and the chain's independent models."""
        return (*self.trainings, *self.independent)

    @classmethod
    def from_dict(cls, raw: dict) -> "Chain":
        """The inverse of ``dataclasses.asdict`` (plans and search outcomes are stored as JSON)."""
        return cls(**{**raw, "root": Training(**raw["root"]), "generations": tuple(Training(**g) for g in raw["generations"]),
                      "independent": tuple(Training(**t) for t in raw.get("independent", ()))})


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will train, after presets and command-line overrides."""

    name: str
    source: str
    preset: str
    dataset: str
    recipe: Recipe
    seeds: tuple[int, ...]
    chains: tuple[Chain, ...]
    columns: dict  # column label -> cell reference ("teacher", "ban/1", "ban/ens2", "baseline/0")
    paper: dict  # row -> column label -> reported number or None
    validation_size: int = 0
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    search: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)  # defaults for the CLI's resource options
    label_column: Optional[str] = None  # a parquet: dataset's label column (--label-column); None: the loader's rule
    reference: str = "paper"  # what the rows' ``paper:`` numbers are, as tables and legends name them

    def recipe_for(self, chain: Chain) -> Recipe:
        """The recipe a chain trains with: the sweep's, with its row's own values laid over it."""
        return self.recipe.replace(**chain.recipe_overrides) if chain.recipe_overrides else self.recipe

    def recipe_of(self, key: str) -> Recipe:
        """The recipe of the chain that holds training ``key`` (a shared teacher's row recipe is one recipe)."""
        for chain in self.chains:
            if any(t.key == key for t in chain.all_trainings):
                return self.recipe_for(chain)
        return self.recipe

    def roots(self) -> list[Training]:
        """Distinct generation-0 trainings (teachers, baselines, independent models): each is trained once per sweep."""
        unique: dict[str, Training] = {}
        for chain in self.chains:
            for training in (chain.root, *chain.independent):
                unique.setdefault(training.key, training)
        return list(unique.values())

    def distilled_chains(self) -> list[Chain]:
        return [chain for chain in self.chains if chain.generations]

    def trainings(self) -> list[Training]:
        """Every distinct model of the sweep, roots first."""
        unique = {t.key: t for t in self.roots()}
        for chain in self.chains:
            unique.update({t.key: t for t in chain.generations})
        return list(unique.values())

    def data_config(self) -> dict:
        """What every worker needs to load the same data (``generations.prepare_data``)."""
        config = {"dataset": self.dataset, "validation_size": self.validation_size,
                  "train_subset": self.train_subset, "test_subset": self.test_subset}
        if self.label_column:  # only when set, so the keys of every existing model stay as they were
            config["label_column"] = self.label_column
        return config

    def to_dict(self) -> dict:
        return {**asdict(self), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict) -> "SweepPlan":
        """The inverse of ``to_dict`` (results.parquet stores the plan this way)."""
        chains = tuple(Chain.from_dict(c) for c in raw["chains"])
        return cls(**{**raw, "recipe": Recipe.from_dict(raw["recipe"]), "seeds": tuple(raw["seeds"]), "chains": chains})


def table_names() -> list[str]:
    """The sweeps shipped in search_spaces/, by name."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve(table_or_file: str) -> Path:
    """A table name (``table5``) or a path to a YAML file -> the file; SpaceError if neither."""
    path = Path(table_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"{table_or_file}: no such search-space file; check the path or run --list for the tables")
        return path
    candidate = SPACES_DIR / f"{table_or_file}.yaml"
    if candidate.is_file():
        return candidate
    close = difflib.get_close_matches(table_or_file, table_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise SpaceError(f"unknown table '{table_or_file}'{hint}: use one of {', '.join(table_names())} or a path to a .yaml file")


def read_yaml(path: Path) -> dict:
    """Parse with yaml.safe_load only (no tags that run code); errors name the line."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpaceError(f"{path}:{where}: malformed YAML ({problem}); fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"{path}: cannot read the file ({error.__class__.__name__}); check it is a readable text file") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: the top level must be a mapping with keys such as name, dataset, recipe, rows")
    return data


def load(table_or_file: str, preset: str = "paper", overrides: Optional[dict] = None) -> SweepPlan:
    """Load, apply ``preset`` then command-line ``overrides`` (dataset, label_column, seeds, generations), validate, expand."""
    path = resolve(table_or_file)
    raw = read_yaml(path)
    try:
        return expand(raw, str(path), preset, overrides or {})
    except SpaceError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        # a shape the checks above did not foresee: still one line that names the file, never a traceback
        raise SpaceError(f"{path}: not a valid search space ({type(error).__name__}: {error}); compare it with "
                         "search_spaces/table1.yaml and the schema in the README") from None


def expand(raw: dict, source: str, preset: str = "paper", overrides: Optional[dict] = None) -> SweepPlan:
    """Validate a parsed space and expand it into chains (separate from ``load`` so it can be fuzzed).

    The file's shape (keys, types) is checked by ``schema.SpaceFile``; what follows checks what spans keys."""
    where = _Where(source)
    overrides = overrides or {}
    try:
        checked = SpaceFile.model_validate(raw)
    except ValidationError as error:
        where.fail(*first_problem(error))
    name = raw.get("name") or Path(source).stem
    presets = raw.get("presets") or {}
    if preset != "paper" and preset not in presets:
        where.fail("presets", f"no preset '{preset}'", f"use one of paper, {', '.join(presets) or '(none defined)'}")
    chosen = presets.get(preset) or {}

    file_recipe = raw.get("recipe") or {}
    preset_recipe = chosen.get("recipe") or {}
    try:
        recipe = Recipe.from_dict({**file_recipe, **preset_recipe})
    except ValueError as error:
        where.fail("recipe", str(error), "correct the recipe values")

    dataset = overrides.get("dataset") or chosen.get("dataset") or raw.get("dataset")
    if not dataset:
        where.fail("dataset", "is missing", "name the dataset, e.g. dataset: cifar100 (or pass --dataset)")
    if overrides.get("seeds"):
        seeds = list(overrides["seeds"])
    else:
        chosen_seeds = checked.presets[preset].seeds if preset in (checked.presets or {}) else None
        seeds = chosen_seeds or checked.seeds or [0]  # lists already: the schema read counts and ranges
    architectures = chosen.get("architectures") or {}
    # keyword arguments per architecture name (e.g. a Table 5 student's teacher), file-wide then preset
    arch_kwargs = {**(raw.get("model_kwargs") or {}), **(chosen.get("model_kwargs") or {})}
    generation_cap = overrides.get("generations", chosen.get("generations"))
    if generation_cap is not None and (not isinstance(generation_cap, int) or isinstance(generation_cap, bool) or generation_cap < 1):
        where.fail("generations", f"must be a positive integer, got {generation_cap!r}", "use 1 or more")

    rows = raw["rows"]
    row_filter = chosen.get("rows")
    if row_filter is not None:
        row_filter = [str(r) for r in row_filter]
    columns = raw.get("columns") or {}
    chains: list[Chain] = []
    paper: dict = {}
    data_key = {"dataset": dataset, **{k: chosen.get(k, raw.get(k)) for k in ("validation_size", "train_subset", "test_subset")}}
    label_column = overrides.get("label_column")
    if label_column:  # other labels train other models: their keys differ
        data_key["label_column"] = label_column
    for index, row in enumerate(rows):
        at = f"rows[{index}]"
        row_name = where.name(str(row["row"]), f"{at}.row")
        if row_filter is not None and row_name not in row_filter:
            continue
        paper[row_name] = row.get("paper") or {}
        for column in paper[row_name]:
            if columns and column not in columns:
                where.fail(f"{at}.paper.{column}", "is not one of the columns", f"use one of {', '.join(columns)}")
        row_recipe, overrides = recipe, {}
        if row.get("recipe"):  # the row's own values; a preset's recipe still wins (smoke stays small)
            try:
                row_recipe = Recipe.from_dict({**file_recipe, **row["recipe"], **preset_recipe})
            except ValueError as error:
                where.fail(f"{at}.recipe", str(error), "correct the recipe values")
            base = recipe.to_dict()
            overrides = {k: v for k, v in row_recipe.to_dict().items() if base[k] != v}
        for seed in seeds:
            for chain in _row_chains(where, at, row, row_name, seed, architectures, arch_kwargs, row_recipe, data_key,
                                     generation_cap):
                chains.append(replace(chain, recipe_overrides=overrides) if overrides else chain)
    if not chains:
        where.fail(f"presets.{preset}.rows", "selects no row", "name rows that exist in rows[].row")
    _check_unique(where, chains)
    for label, cell in columns.items():
        _check_cell(where, f"columns.{label}", cell, chains)
    _check_stopping_data(where, chains, dataset, chosen.get("validation_size", raw.get("validation_size")))

    def number(key: str) -> Optional[int]:
        value = chosen.get(key, raw.get(key))
        return (0 if key == "validation_size" else None) if value is None else value

    return SweepPlan(
        name=name, source=source, preset=preset, dataset=dataset, recipe=recipe, seeds=tuple(seeds),
        chains=tuple(chains), columns=dict(columns), paper=paper, validation_size=number("validation_size"),
        train_subset=number("train_subset"), test_subset=number("test_subset"),
        search=_search_section(where, raw.get("search"), chosen.get("search"), preset),
        resources=dict(chosen.get("resources") or {}),
        label_column=label_column or None,
        reference=raw.get("reference") or "paper",
    )


def _search_section(where, file_search: Any, preset_search: Any, preset: str) -> dict:
    """The raw ``search:`` mapping with the preset's laid over it (``ray_ban.config.search`` validates it)."""
    base, over = file_search or {}, preset_search or {}
    merged = {**base, **over}
    if isinstance(base.get("space"), dict) and isinstance(over.get("space"), dict):
        merged["space"] = {**base["space"], **over["space"]}
    return merged


def _row_chains(where, at, row, row_name, seed, architectures, arch_kwargs, recipe, data_key, generation_cap) -> list[Chain]:
    """Expand one row for one seed: its shared teacher, its chains and baselines."""
    teacher_arch = row.get("teacher")
    if teacher_arch is not None:
        teacher_arch = architectures.get(teacher_arch, teacher_arch)
    row_kwargs = row.get("model_kwargs") or {}
    chain_specs = row["chains"]
    chains = []
    for chain_name, spec in chain_specs.items():
        cat = f"{at}.chains.{chain_name}"
        where.name(chain_name, cat)
        baseline = bool(spec.get("baseline"))
        if baseline and spec.get("independent"):
            where.fail(f"{cat}.independent", "a baseline has no ensemble to partner", "move independent to a distilled chain")
        student = spec.get("student") or row.get("teacher")
        if student is None:
            where.fail(f"{cat}.student", "is missing, and the row has no teacher to be born again from",
                       "name the student architecture, e.g. student: wrn-16-2")
        student = architectures.get(student, student)
        kwargs = {**arch_kwargs.get(student, {}), **row_kwargs, **(spec.get("model_kwargs") or {})}
        loss = spec.get("loss") or ("label" if baseline else "ban")
        if loss not in LOSS_NAMES:
            close = difflib.get_close_matches(str(loss), list(LOSS_NAMES), n=1)
            where.fail(f"{cat}.loss", f"unknown loss '{loss}'" + (f" (did you mean {close[0]}?)" if close else ""), f"use one of {', '.join(LOSS_NAMES)}")
        loss_params = spec.get("loss_params") or {}
        try:
            check_loss_params(loss, loss_params)
        except ValueError as error:
            where.fail(f"{cat}.loss_params", str(error), "remove or rename the parameter")
        generations = spec.get("generations")
        generations = (0 if baseline else 1) if generations is None else generations
        stopping = {}
        if isinstance(generations, dict) and not baseline:
            generations, stopping = _stopping(generations, data_key["dataset"])
        if isinstance(generations, dict) or generations < (0 if baseline else 1):
            where.fail(f"{cat}.generations", f"must be a positive integer, got {generations!r}", "use 1 or more")
        if generation_cap is not None and not baseline:
            generations = generation_cap
        chain_seed = _derive_seed(seed, row_name, chain_name)
        if baseline:
            if loss != "label":
                where.fail(f"{cat}.loss", f"a baseline trains from labels alone, got loss '{loss}'", "drop loss or use loss: label")
            root = _training(student, "label", {}, chain_seed, 0, "baseline", None, kwargs, recipe, data_key)
            chains.append(Chain(_chain_id(row_name, chain_name, seed), row_name, chain_name, seed, root, (), {}))
            continue
        if teacher_arch is None:
            where.fail(f"{at}.teacher", "is missing", "name the teacher architecture, e.g. teacher: densenet-90-60")
        teacher_kwargs = {**arch_kwargs.get(teacher_arch, {}), **row_kwargs}
        root = _training(teacher_arch, "label", {}, _derive_seed(seed, teacher_arch, "teacher"), 0, "teacher", None,
                         teacher_kwargs, recipe, data_key)
        previous, distilled = root, []
        for generation in range(1, generations + 1):
            previous = _training(student, loss, loss_params, chain_seed + generation, generation, "student",
                                 previous.key, kwargs, recipe, data_key)
            distilled.append(previous)
        ensembles = _ensembles(where, f"{cat}.ensembles", spec.get("ensembles"), generations)
        count = spec.get("independent") or 0
        if count == 1:
            where.fail(f"{cat}.independent", f"must be the size of an ensemble (2 or more, or 0 for none), got {count!r}",
                       "e.g. independent: 3 beside ens3")
        # fresh seeds per (sweep seed, architecture, index): chains of the same student share them, like a teacher
        independent = tuple(_training(student, "label", {}, _derive_seed(seed, student, "independent", str(i)), 0,
                                      "independent", None, kwargs, recipe, data_key) for i in range(count))
        chains.append(Chain(_chain_id(row_name, chain_name, seed), row_name, chain_name, seed, root, tuple(distilled), ensembles,
                            independent=independent, stopping=stopping))
    return chains




def _stopping(spec: dict, dataset: str) -> tuple[int, dict]:
    """``generations: {max: 5, patience: 1, metric: val_error}`` (checked by ``schema.StoppingRule``) ->
    (5, {"patience": 1, "metric": "val_error"}), the metric defaulting to the dataset's validation metric."""
    rule = StoppingRule.model_validate(spec)  # its defaults (patience 1) are declared there once
    return rule.max, {"patience": rule.patience, "metric": rule.metric or ("val_perplexity" if is_text(dataset) else "val_error")}


def _check_stopping_data(where, chains: list[Chain], dataset: str, validation_size: Any) -> None:
    """A chain that stops by itself selects on validation data, never on the test set (as a search does)."""
    stopping = next((c for c in chains if c.stopping), None)
    if stopping is not None and not validation_size and not is_text(dataset):
        where.fail(f"row {stopping.row}, chain {stopping.name}: generations",
                   "stops on a validation metric, and this plan holds out no validation split",
                   "set validation_size (e.g. validation_size: 5000) or give generations as a number")


def _ensembles(where, at: str, spec: Any, generations: int) -> dict:
    """Default: Ens*k averages generations 1..k for k = 2..K; or explicit {name: [generations]}."""
    if spec is None:
        return {f"ens{k}": list(range(1, k + 1)) for k in range(2, generations + 1)}
    for name, members in spec.items():
        if len(members) < 2 or any(m > generations for m in members):
            where.fail(f"{at}.{name}", f"must list two or more generations between 0 and {generations}, got {members!r}", "e.g. ens3: [1, 2, 3]")
    return {name: list(members) for name, members in spec.items()}


def _training(architecture, loss, loss_params, seed, generation, role, teacher_key, kwargs, recipe, data_key) -> Training:
    """A model and its key: a hash of everything that determines it (architecture and its arguments, loss,
    seed, teacher, recipe with its precision, data with its subsets, the family's code versions)."""
    identity = {"architecture": architecture, "loss": loss, "loss_params": loss_params, "seed": seed,
                "teacher": teacher_key, "model_kwargs": kwargs, "recipe": recipe.to_dict(), "data": data_key}
    versions = bumped_versions(architecture)
    if versions:  # version 1 is implicit, so the keys of models trained before versions existed stay as they were
        identity["family_versions"] = versions
    text = json.dumps(identity, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    key = f"{architecture}-{loss.replace('+', 'p')}-s{seed}-{digest}"
    return Training(key, architecture, loss, dict(loss_params), seed, generation, role, teacher_key, dict(kwargs),
                    hashlib.sha256(text.encode()).hexdigest())


def _derive_seed(seed: int, *names: str) -> int:
    """A stable per-(seed, names) training seed, so that e.g. BAN and BAN-1 differ only by seed."""
    return seed * 1_000_003 + zlib.crc32("/".join(names).encode()) % 1_000_000


def _chain_id(row: str, chain: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{row}.{chain}.seed{seed}").replace("+", "p")


def _check_unique(where, chains: list[Chain]) -> None:
    seen = set()
    for chain in chains:
        if chain.chain_id in seen:
            where.fail("rows", f"two chains are both called {chain.chain_id}", "give every row a distinct row name")
        seen.add(chain.chain_id)


def _check_cell(where, at: str, cell: Any, chains: list[Chain]) -> None:
    """A column's cell reference must name something the rows produce."""
    if not isinstance(cell, str):
        where.fail(at, f"must be a cell reference string, got {cell!r}", "use teacher, params, CHAIN/GENERATION, CHAIN/ensN or CHAIN/indN")
    ref = parse_cell(cell)
    cell, chain_name, part = cell.partition("@")[0], ref.chain, ref.part
    if ref.metric and ref.metric not in CELL_METRICS:
        where.fail(at, f"unknown cell metric '@{ref.metric}'", f"use one of {', '.join('@' + m for m in CELL_METRICS)}")
    if chain_name is None:
        return
    names = {c.name for c in chains}
    if chain_name not in names:
        where.fail(at, f"refers to chain '{chain_name}', which no row defines", f"use one of {', '.join(sorted(names))}")
    if part.startswith("ind"):
        size = max(len(c.independent) for c in chains if c.name == chain_name)
        if not part[3:].isdigit() or not 2 <= int(part[3:]) <= size:
            where.fail(at, f"'{cell}' asks for an ensemble of independent models that chain '{chain_name}' does not have "
                       f"({size} independent)", f"set independent: K on the chain and write {chain_name}/indK with 2 <= K")
        return
    if not (part.isdigit() or part.startswith("ens") or part == "params"):
        where.fail(at, f"'{cell}' has no generation or ensemble after the slash", "write e.g. ban/1, ban/ens2 or ban/ind2")


class _Where:
    """Builds SpaceError messages that name the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str, fix: str):
        raise SpaceError(f"{self.source}: {key}: {problem}; {fix}")

    def name(self, value: str, at: str) -> str:
        if not NAME_PATTERN.match(value):
            self.fail(at, f"'{value}' is not a usable name", "use letters, digits and . _ + - only")
        return value
