"""A search (``ray_ban.config.search``, plain data) in Ray Tune's terms: its param_space, searcher and scheduler."""

from __future__ import annotations

from ray_ban.config.search import Search, parse_spec


def tune_space(search: Search) -> dict:
    """The Ray Tune param_space of the searched values."""
    from ray import tune

    space = {}
    for name, spec in search.space.items():
        kind, values = parse_spec(name, spec)
        if kind == "grid":
            space[name] = tune.grid_search(values)
        elif kind == "choice":
            space[name] = tune.choice(values)
        elif kind == "uniform":
            space[name] = tune.uniform(*values)
        elif kind == "loguniform":
            space[name] = tune.loguniform(*values)
        else:
            space[name] = tune.randint(values[0], values[1] + 1)  # Tune's upper bound is exclusive
    return space


def searcher(search: Search, max_concurrent: int):
    """Tune's search algorithm: random/grid sampling, or Optuna's TPE (needs the 'search' extra).

    The concurrency limit goes to the searcher itself: Tune ignores ``TuneConfig.max_concurrent_trials``
    for a BasicVariantGenerator passed in, and would start every trial at once."""
    if search.search_alg != "optuna":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=search.seed, max_concurrent=max_concurrent)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=search.seed)


def scheduler(search: Search, max_iterations: int):
    """FIFO, or ASHA over per-epoch reports: its time axis spans every generation of a chain."""
    if search.scheduler == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_iterations, grace_period=search.grace_period,
                         reduction_factor=search.reduction_factor)
