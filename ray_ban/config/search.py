"""Hyperparameter search over generation chains: the ``search:`` section of a space, as plain data.

A search tunes the distilled generations of one chain of the plan: its recipe (lr, weight decay,
batch size, ...), its loss parameters (label weight, temperature, alpha), its model's dropout and
its number of generations. The teacher is trained once, with the file's recipe, and shared by
every trial. Selection uses a validation metric only, never test. Specs are strings, the same in
YAML and on the command line: ``choice:a,b``, ``grid:a,b``, ``uniform:lo:hi``, ``loguniform:lo:hi``,
``randint:lo:hi`` (both ends included). Parsing and applying are pure; ``tune_space`` and
``searcher``/``scheduler`` turn the data into Ray Tune objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from ray_ban.config.loss_names import check_loss_params
from ray_ban.config.recipe import Recipe
from ray_ban.config.spaces import Chain, SpaceError, SweepPlan, _ensembles, _training

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
SEARCH_ALGS = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha")
SELECTION_METRICS = ("val_error", "val_loss", "val_perplexity")
LOSS_PARAMS = ("label_weight", "temperature", "alpha")
MODEL_PARAMS = ("dropout",)
RECIPE_PARAMS = ("lr", "weight_decay", "batch_size", "momentum", "epochs", "lr_decay", "warmup_fraction", "schedule",
                 "nesterov", "grad_clip", "plateau_factor")
INTEGER_PARAMS = ("batch_size", "epochs", "generations")
SETTINGS = {"space", "num_samples", "search_alg", "scheduler", "metric", "grace_period", "reduction_factor", "seed"}


@dataclass(frozen=True)
class Search:
    """A validated search: parameter name -> spec string, and how Tune explores and stops trials."""

    space: dict
    num_samples: int = 8
    search_alg: str = "random"
    scheduler: str = "fifo"
    metric: str = "val_error"
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 2
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def trials(self) -> int:
        """How many chains the search trains: grid points x num_samples."""
        points = 1
        for spec in self.space.values():
            kind, values = parse_spec("", spec)
            if kind == "grid":
                points *= len(values)
        return points * self.num_samples


def parse_spec(name: str, spec: Any) -> tuple[str, list]:
    """``"loguniform:0.02:0.2"`` -> ("loguniform", [0.02, 0.2]); ValueError naming the problem and the fix."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{name}: '{spec}' is not a distribution; write e.g. loguniform:0.02:0.2 or choice:64,128")
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown distribution '{kind}'; use one of {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        values = [_value(v) for v in rest.split(",") if v.strip()]
        if not values:
            raise ValueError(f"{name}: {kind} needs at least one value, e.g. {kind}:0.25,0.5,1")
        return kind, values
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise ValueError(f"{name}: {kind} takes two bounds, e.g. {kind}:1:4, got '{spec}'")
    low, high = (_value(b) for b in bounds)
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in (low, high)):
        raise ValueError(f"{name}: {kind} bounds must be numbers, got '{spec}'")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int) and low <= high):
        raise ValueError(f"{name}: randint needs whole bounds low <= high, got '{spec}'")
    if kind in ("uniform", "loguniform") and not low < high:
        raise ValueError(f"{name}: {kind} needs low < high, got '{spec}'")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{name}: loguniform needs positive bounds, got '{spec}'")
    return kind, [low, high]


def _value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_search(raw: Any, where: str, chain: Chain, recipe: Recipe) -> Search:
    """Validate a ``search:`` mapping against the chain it tunes; SpaceError (one line) on any problem."""
    def fail(key: str, problem: str) -> None:
        raise SpaceError(f"{where}: search.{key}: {problem}")

    if not isinstance(raw, dict):
        fail("", f"must be a mapping, got {type(raw).__name__}; write space:, num_samples:, search_alg: ...")
    if chain.stopping:  # every trial trains the generations it draws; a stopping rule would select on its own
        fail("", f"chain {chain.name} stops by itself (generations: {{max, patience}}); a search trains a fixed "
                 "number of generations per trial: write generations as a number, or search generations")
    for key in raw:
        if key not in SETTINGS:
            fail(str(key), f"unknown key; allowed keys: {', '.join(sorted(SETTINGS))}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        fail("space", "must map parameters to distributions, e.g. lr: loguniform:0.02:0.2")
    search = Search(space=dict(space), **{k: raw[k] for k in SETTINGS - {"space"} if k in raw})
    for key in ("num_samples", "grace_period", "reduction_factor", "seed"):
        value = getattr(search, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            fail(key, f"must be a positive integer, got {value!r}")
    if search.reduction_factor < 2:
        fail("reduction_factor", f"must be 2 or more, got {search.reduction_factor}")
    if search.search_alg not in SEARCH_ALGS:
        fail("search_alg", f"'{search.search_alg}' is not known; use one of {', '.join(SEARCH_ALGS)}")
    if search.scheduler not in SCHEDULERS:
        fail("scheduler", f"'{search.scheduler}' is not known; use one of {', '.join(SCHEDULERS)}")
    if search.metric not in SELECTION_METRICS:
        hint = " (selection never uses test data)" if str(search.metric).startswith("test") else ""
        fail("metric", f"'{search.metric}' cannot select{hint}; use one of {', '.join(SELECTION_METRICS)}")
    for name, spec in search.space.items():
        try:
            kind, values = parse_spec(str(name), spec)
            _check_parameter(str(name), kind, values, chain, recipe)
        except ValueError as error:
            fail(f"space.{name}", str(error).split(": ", 1)[-1])
        if kind == "grid" and search.search_alg == "optuna":
            fail(f"space.{name}", "Optuna cannot search a grid; use choice: instead, or search_alg: grid")
        if search.search_alg == "grid" and kind != "grid":
            fail(f"space.{name}", f"search_alg grid needs grid: values for every parameter, got {kind}")
    return search


def _check_parameter(name: str, kind: str, values: list, chain: Chain, recipe: Recipe) -> None:
    """The parameter must be one a chain can take, and every value (or both bounds) must be usable."""
    known = RECIPE_PARAMS + LOSS_PARAMS + MODEL_PARAMS + ("generations",)
    if name not in known:
        raise ValueError(f"{name}: cannot be searched; use one of {', '.join(known)}")
    if name in INTEGER_PARAMS and kind in ("uniform", "loguniform"):
        raise ValueError(f"{name}: is a whole number; use randint, choice or grid")
    for value in values:  # every listed value, or both bounds of a range
        apply_hparams_checked(name, value, chain, recipe)


def apply_hparams_checked(name: str, value: Any, chain: Chain, recipe: Recipe) -> None:
    """Raise ValueError if one value cannot be applied to the chain (wrong type, range or loss)."""
    student = chain.generations[-1]
    if name in LOSS_PARAMS:
        check_loss_params(student.loss, {**student.loss_params, name: value})
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name}: must be a number, got {value!r}")
    elif name in MODEL_PARAMS:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(f"{name}: must be a number in [0, 1), got {value!r}")
    elif name == "generations":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"generations: must be a positive integer, got {value!r}")
    else:
        recipe.replace(**{name: value})


def apply_hparams(plan: SweepPlan, chain: Chain, hparams: dict) -> tuple[Chain, Recipe]:
    """The chain a trial trains: the template's generations rebuilt with the sampled values.

    The root (the shared teacher) is unchanged; the students' keys change with the values, so each
    trial's models are stored apart and a rerun with the same values finds them finished."""
    hparams = plain_values(hparams)
    recipe = plan.recipe_for(chain).replace(**{k: v for k, v in hparams.items() if k in RECIPE_PARAMS})
    template = chain.generations[-1]
    loss_params = {**template.loss_params, **{k: v for k, v in hparams.items() if k in LOSS_PARAMS}}
    kwargs = {**template.model_kwargs, **{k: v for k, v in hparams.items() if k in MODEL_PARAMS}}
    generations = int(hparams.get("generations", len(chain.generations)))
    previous, distilled = chain.root, []
    first_seed = chain.generations[0].seed - 1
    for generation in range(1, generations + 1):
        previous = _training(template.architecture, template.loss, loss_params, first_seed + generation, generation,
                             "student", previous.key, kwargs, recipe, plan.data_config())
        distilled.append(previous)
    ensembles = chain.ensembles if "generations" not in hparams else _ensembles(None, "", None, generations)
    ensembles = {name: members for name, members in ensembles.items() if max(members) <= generations}
    return replace(chain, generations=tuple(distilled), ensembles=ensembles), recipe


def max_iterations(search: Search, chain: Chain, recipe: Recipe) -> int:
    """The most per-epoch reports one trial can make: epochs x generations at their largest, plus the final."""
    def largest(name: str, default: int) -> int:
        if name not in search.space:
            return default
        kind, values = parse_spec(name, search.space[name])
        return int(max(values))

    return largest("epochs", recipe.epochs) * largest("generations", len(chain.generations)) + 1


def chain_to_search(plan: SweepPlan) -> Chain:
    """The one distilled chain a search tunes; SpaceError when the plan has none or several."""
    chains = plan.distilled_chains()
    if len(chains) != 1:
        names = ", ".join(c.chain_id for c in chains) or "none"
        raise SpaceError(f"{plan.source}: search: tunes exactly one distilled chain, but the plan has {len(chains)} "
                         f"({names}); select one row with presets.<name>.rows and one seed")
    return chains[0]


def best_space(raw: dict, preset: str, chain: Chain, hparams: dict, name: str) -> dict:
    """A ready-to-run search-space file with the chosen values written in and the search removed."""
    out = {k: v for k, v in raw.items() if k != "search"}
    out["name"] = name
    recipe_values = {k: v for k, v in hparams.items() if k in RECIPE_PARAMS}
    out["recipe"] = {**(raw.get("recipe") or {}), **recipe_values}
    presets = {k: dict(v or {}) for k, v in (raw.get("presets") or {}).items()}
    for values in presets.values():
        values.pop("search", None)
        if "recipe" in values:  # a preset's own recipe would override the chosen values
            values["recipe"] = {**values["recipe"], **{k: v for k, v in recipe_values.items() if k in values["recipe"]}}
        if "generations" in hparams and "generations" in values:
            values["generations"] = hparams["generations"]
    if presets:
        out["presets"] = presets
    rows = []
    for row in raw.get("rows", []):
        row = dict(row)
        if row.get("row") == chain.row:
            chains = {}
            for chain_name, spec in (row.get("chains") or {}).items():
                spec = dict(spec or {})
                if chain_name == chain.name:
                    loss = {k: v for k, v in hparams.items() if k in LOSS_PARAMS}
                    model = {k: v for k, v in hparams.items() if k in MODEL_PARAMS}
                    if loss:
                        spec["loss_params"] = {**(spec.get("loss_params") or {}), **loss}
                    if model:
                        spec["model_kwargs"] = {**(spec.get("model_kwargs") or {}), **model}
                    if "generations" in hparams:
                        spec["generations"] = hparams["generations"]
                chains[chain_name] = spec
            row["chains"] = chains
        rows.append(row)
    out["rows"] = rows
    return out


def merge_cli(search_raw: Optional[dict], specs: list[str], options: dict) -> Optional[dict]:
    """The file's search section with ``--search name=spec`` and ``--num-samples`` etc. laid over it."""
    if not specs and not search_raw and not any(v is not None for v in options.values()):
        return search_raw
    merged = dict(search_raw or {})
    space = dict(merged.get("space") or {})
    for text in specs:
        name, sep, spec = text.partition("=")
        if not sep or not name.strip():
            raise SpaceError(f"--search '{text}': write NAME=DISTRIBUTION, e.g. --search lr=loguniform:0.02:0.2")
        space[name.strip()] = spec.strip()
    if space:
        merged["space"] = space
    merged.update({k: v for k, v in options.items() if v is not None})
    return merged


def plain_values(values: dict) -> dict:
    """Tune samples with numpy: numpy scalars become Python ones, so recipes, keys and YAML accept them."""
    return {k: (v.item() if hasattr(v, "item") and not isinstance(v, (list, dict)) else v) for k, v in values.items()}


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
