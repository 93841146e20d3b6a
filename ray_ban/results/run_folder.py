"""A sweep's run folder: its identity (what makes two runs the same sweep) and creating or reusing it."""

from __future__ import annotations

from pathlib import Path

from ray_ban.config.spaces import SweepPlan
from ray_ban.errors import UsageError
from ray_ban.store import is_uri, join


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


def run_location(out: str, name: str) -> str:
    """``<out>/<sweep>``: an absolute local path (workers run in Ray's own folders) or a storage URI."""
    if is_uri(out):
        return join(out, name)
    return str((Path(out).expanduser() / name).resolve())
