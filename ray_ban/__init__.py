"""ray-ban: Born-Again Neural Networks at cluster scale.

    import ray_ban
    ray_ban.init_ray()                                             # optional: one Ray session for every run below
    results = ray_ban.run("table1", preset="smoke", out="runs")   # a Results: .table (pyarrow), .to_pandas()
    plan = ray_ban.load_space("table5", preset="smoke")            # the validated plan, plain data
    table = ray_ban.read_results("runs/table1")                    # results.parquet of any run folder or URI
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("ray-ban")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Results", "__version__", "init_ray", "load_space", "read_results", "run"]


def __getattr__(name: str):
    """The API on first use: ``import ray_ban`` stays free of torch, Ray and pyarrow."""
    if name in ("run", "init_ray", "load_space", "read_results", "Results"):
        from ray_ban import api

        return getattr(api, name)
    raise AttributeError(f"module 'ray_ban' has no attribute {name!r}")
