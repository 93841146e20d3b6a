"""The shape of a search-space file as pydantic models: the one place its keys and types are declared.

``spaces.expand`` validates a parsed file against ``SpaceFile`` before expanding it, and turns the first
problem into one line naming the file, the key path and the fix (``first_problem``). What needs more than
one key at a time (a cell naming a chain that exists, a loss's parameters, a recipe's momentum with
nesterov) stays in ``spaces``. ``python -m ray_ban.sweep --schema`` prints ``json_schema()`` for editors.
"""

from __future__ import annotations

import difflib
import typing
from collections import Counter
from dataclasses import fields
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, WithJsonSchema, create_model

from ray_ban.config.recipe import Recipe

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Section(BaseModel):
    model_config = STRICT


def parse_seeds(spec: str) -> list[int]:
    """Seeds from text such as ``0-4`` or ``0-2,7``: comma-separated seeds and inclusive ranges, each once.

    ValueError (one line, naming the part at fault) for anything else."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        low, dash, high = (piece.strip() for piece in part.partition("-"))
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"'{part.strip()}' is neither a seed nor a range such as 0-4")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"the range '{part.strip()}' runs backwards; write {last}-{first}")
        seeds.extend(range(first, last + 1))
    repeated = sorted(seed for seed, times in Counter(seeds).items() if times > 1)
    if repeated:
        raise ValueError(f"seed {repeated[0]} is given twice")
    return seeds


def seed_list(value: Any) -> list[int]:
    """A space file's seeds: a list, a count N (seeds 0..N-1) or the text of ``parse_seeds``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"a count of seeds must be at least 1, got {value}")
        return list(range(value))
    if isinstance(value, str):
        return parse_seeds(value)
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise ValueError(f"must be a non-empty list of non-negative integers, a count or a range, got {_shown(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"lists a seed twice ({value!r})")
    return list(value)


def _row_name(value: Any) -> str:
    """Row names may be written as numbers in YAML (``row: 100``); they are names all the same."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_shown(value)}")
    return value


def _paper_value(value: Any) -> Any:
    """A number the paper reports: an error, a count written as text ('0.38M'), or null where it has none."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        raise ValueError(f"must be a number, a text such as '0.38M' or null, got {_shown(value)}")
    return value


# -- field types: each says what it holds in the JSON Schema too ----------------------------------------------
Text = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=1)]
Size = Annotated[int, Field(ge=0)]
Seeds = Annotated[Any, AfterValidator(seed_list), WithJsonSchema({
    "description": "a count N (seeds 0..N-1), a list of seeds, or text such as '0-4' or '0-2,7'",
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$"},
              {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "uniqueItems": True}]})]
RowName = Annotated[Any, AfterValidator(_row_name), WithJsonSchema({"type": ["string", "number"], "minLength": 1})]
PaperValue = Annotated[Any, AfterValidator(_paper_value), WithJsonSchema({"type": ["number", "string", "null"]})]
ModelKwargs = dict[str, Any]


def _recipe_type(name: str, default: Any) -> Any:
    """The pydantic type of one recipe field, read off its default (and its allowed values where it has them)."""
    choices = {"schedule": Recipe.SCHEDULES, "precision": Recipe.PRECISIONS, "crop_padding_mode": Recipe.PADDING_MODES}
    if name in choices:
        return Literal[choices[name]]
    if isinstance(default, tuple):
        return list[float]
    return type(default)


# every recipe key, typed from the Recipe dataclass itself, so the two cannot drift apart
RecipeValues = create_model(
    "RecipeValues", __config__=STRICT, __doc__="Training recipe values; every key is optional (defaults: the paper's CIFAR recipe).",
    **{f.name: (_recipe_type(f.name, f.default), f.default) for f in fields(Recipe)})


class Resources(_Section):
    """A preset's default resources per chain worker (the command line overrides them)."""

    cpus_per_worker: Annotated[float, Field(gt=0, examples=[0.5])] = 1.0


STOP_METRICS = ("val_error", "val_perplexity")  # validation only: stopping never reads a test metric


class StoppingRule(_Section):
    """``generations: {max: 5, patience: 1, metric: val_error}``: the chain ends once ``patience`` generations in a
    row fail to improve ``metric`` on the best of its lineage before them."""

    max: Count = Field(description="generations at most")
    patience: Count = 1
    metric: Optional[Literal[STOP_METRICS]] = Field(None, description="default: val_error (val_perplexity for text)")


# a number of generations, or a rule that stops the chain by itself (told apart by shape, so errors name the key)
Generations = Annotated[Union[Annotated[Size, Tag("count")], Annotated[StoppingRule, Tag("rule")]],
                        Discriminator(lambda value: "rule" if isinstance(value, dict) else "count")]


class ChainSpec(_Section):
    """One chain of a row: a student distilled for some generations from the row's teacher, or a baseline."""

    student: Optional[Text] = Field(None, description="architecture or an architectures: alias; default: the row's teacher")
    loss: Optional[Text] = Field(None, description="label, ban, ban+l, cwtm, dkpp, ... (default: ban; label for a baseline)")
    loss_params: Optional[dict[str, float]] = Field(None, examples=[{"label_weight": 0.5}])
    generations: Optional[Generations] = Field(None, description="generations distilled one after another (default 1; 0 for "
                                                                 "a baseline), or {max, patience, metric} to stop by itself")
    ensembles: Optional[dict[str, list[Size]]] = Field(None, examples=[{"ens3": [1, 2, 3]}])
    baseline: Optional[bool] = Field(None, description="train the student from labels alone, once (no teacher)")
    model_kwargs: Optional[ModelKwargs] = None
    independent: Optional[Size] = Field(None, description="k label-only models of the student with fresh seeds: the fair "
                                                          "partner of Ens*k (2 or more, 0 for none)")


class Row(_Section):
    """A row of a table: a teacher and the chains distilled from it, with the paper's numbers."""

    row: RowName
    teacher: Optional[Text] = None
    chains: dict[str, ChainSpec] = Field(min_length=1, examples=[{"ban": {"loss": "ban", "generations": 1}}])
    paper: Optional[dict[str, PaperValue]] = Field(None, description="column label -> the paper's number")
    model_kwargs: Optional[ModelKwargs] = None
    recipe: Optional[RecipeValues] = None  # type: ignore[valid-type]


class Preset(_Section):
    """A named variant of the file (``smoke``: tiny, for tests); its values win over the file's."""

    description: Optional[str] = None
    dataset: Optional[Text] = None
    recipe: Optional[RecipeValues] = None  # type: ignore[valid-type]
    architectures: Optional[dict[str, Text]] = Field(None, description="architecture name -> the one this preset trains instead")
    model_kwargs: Optional[dict[str, ModelKwargs]] = None
    seeds: Optional[Seeds] = None
    generations: Optional[Count] = Field(None, description="caps every distilled chain at this many generations")
    validation_size: Optional[Size] = None
    train_subset: Optional[Count] = None
    test_subset: Optional[Count] = None
    rows: Optional[list[RowName]] = Field(None, description="the rows this preset trains (default: all)")
    resources: Optional[Resources] = None
    search: Optional[dict[str, Any]] = Field(None, description="laid over the file's search: section")


class SpaceFile(_Section):
    """A search-space file: a paper table (or a sweep of one's own) as data."""

    name: Optional[Text] = Field(None, description="default: the file's name")
    description: Optional[str] = None
    reference: Optional[Text] = Field(None, description="what the rows' paper: numbers are ('paper', 'reference run')")
    dataset: Optional[Text] = Field(None, examples=["cifar100", "parquet:s3://bucket/cifar100", "synthetic"])
    seeds: Optional[Seeds] = None
    recipe: Optional[RecipeValues] = None  # type: ignore[valid-type]
    columns: Optional[dict[str, str]] = Field(None, description="column label -> cell reference: teacher, params, "
                                                                "CHAIN/GENERATION, CHAIN/ensN, CHAIN/indN, with @metric")
    rows: list[Row] = Field(min_length=1)
    presets: Optional[dict[str, Preset]] = None
    validation_size: Optional[Size] = None
    train_subset: Optional[Count] = None
    test_subset: Optional[Count] = None
    search: Optional[dict[str, Any]] = Field(None, description="space:, num_samples:, search_alg:, scheduler:, metric: "
                                                               "(README, 'Hyperparameter search')")
    model_kwargs: Optional[dict[str, ModelKwargs]] = Field(None, description="architecture name -> keyword arguments")


def json_schema() -> dict:
    """The JSON Schema of a space file, for editors (``--schema``)."""
    schema = SpaceFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ray-ban search space"
    return schema


def first_problem(error: ValidationError, model: type[BaseModel] = SpaceFile) -> tuple[str, str, str]:
    """The first of pydantic's errors as (key path, problem, fix), each one line."""
    detail = error.errors(include_url=False)[0]
    loc = list(detail["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    path = _path(model, loc)
    kind, given = detail["type"], _shown(detail.get("input"))
    if is_key:
        return path, f"the key {given} is not text", "write the key as a name (quote it in YAML)"
    if kind == "extra_forbidden":
        allowed = sorted(_fields_at(model, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return path, "unknown key", f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return path, "is missing", f"add {loc[-1]}:"
    if kind == "value_error":
        return path, str(detail.get("ctx", {}).get("error", detail["msg"])), _FIXES.get(_field_name(loc), "fix the value")
    context = detail.get("ctx", {})
    if kind == "literal_error":
        return path, f"must be one of {context.get('expected', '')}, got {given}", "use one of those"
    problem = _PROBLEMS.get(kind)
    if problem is None:
        problem = detail["msg"][0].lower() + detail["msg"][1:]
    else:
        problem = problem.format(**{k: f"{v:g}" if isinstance(v, float) else v for k, v in context.items()})
    return path, f"{problem}, got {given}", _FIXES.get(_field_name(loc), _TYPE_FIXES.get(kind, "fix the value"))


def _field_name(loc: list) -> str:
    """The innermost key of a path that is a field's name (``rows[0].chains.ban.generations`` -> generations)."""
    names = [part for part in loc if isinstance(part, str)]
    return names[-1] if names else ""


def _path(model: type[BaseModel], loc: list) -> str:
    """``('rows', 0, 'chains', 1)`` -> ``rows[0].chains.1``: brackets for list positions, dots for keys (even numeric
    ones); the tags pydantic puts in a path for the member of a union it tried are left out."""
    return "".join(text for text, _ in _walk(model, loc)).lstrip(".")


def _walk(model: type[BaseModel], loc: list):
    """(text, annotation) for each step of ``loc`` through the models' annotations; a union's tag adds no text."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if typing.get_origin(current) is Union:
            current = next((member for member in typing.get_args(current) if any(
                isinstance(meta, Tag) and meta.tag == part for meta in getattr(member, "__metadata__", ()))), None)
            yield "", current
            continue
        text = f"[{part}]" if typing.get_origin(current) is list else f".{part}"
        current = _inner(current, part)
        yield text, current


def _inner(annotation: Any, part: Any) -> Any:
    """The annotation of what ``part`` (a field name, key or index) holds inside ``annotation``; None if unknown."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field else None
    if typing.get_origin(annotation) in (dict, list):
        return typing.get_args(annotation)[-1]
    return None


def _fields_at(model: type[BaseModel], loc: list) -> set[str]:
    """The keys allowed in the mapping at ``loc`` inside ``model`` (for 'did you mean')."""
    current: Any = model
    for _, current in _walk(model, loc):
        pass
    current = _unwrap(current)
    return set(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else set()


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is Union:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0] if len(members) == 1 else annotation
            if len(members) != 1:
                return annotation
        else:
            return annotation


def _shown(value: Any) -> str:
    """A value as the message shows it: its repr, short and on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_PROBLEMS = {
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
    "list_type": "must be a list", "string_type": "must be a string", "int_type": "must be an integer",
    "float_type": "must be a number", "bool_type": "must be true or false",
    "greater_than_equal": "must be at least {ge}", "greater_than": "must be above {gt}",
    "too_short": "must not be empty", "string_too_short": "must be a non-empty string",
    "finite_number": "must be a finite number",
}
_TYPE_FIXES = {
    "dict_type": "write key: value pairs", "model_type": "write key: value pairs", "list_type": "write a YAML list",
    "string_type": "write a name", "string_too_short": "write a name", "bool_type": "write true or false",
}
_FIXES = {
    "seeds": "write e.g. seeds: [0, 1, 2], seeds: 5 (seeds 0..4) or seeds: '0-2,7'",
    "generations": "use 1 or more", "independent": "e.g. independent: 3 beside ens3",
    "rows": "add rows with a teacher and chains", "chains": "add at least one chain, e.g. ban: {loss: ban, generations: 1}",
    "cpus_per_worker": "e.g. 0.5 to run two tiny chains per core", "ensembles": "e.g. ens3: [1, 2, 3]",
    "row": "give the row a name", "train_subset": "fix the number", "test_subset": "fix the number",
    "validation_size": "fix the number",
}
