"""What every Ray Train worker of a chain runs: its own torch.distributed group, then the generations.

Only the workers import this module (and so torch): the chain's Tune trial and Train's controller
stay free of it, which saves each of them about 2.4 s of CPU per chain (``chain.ChainTrainer``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

import ray
import ray.train
import ray.train.collective
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

from ray_ban.audit import audit
from ray_ban.core.generations import Resume, prepare_data, run_chain
from ray_ban.orchestration.placement import GROUP_KEY, current_group_id
from ray_ban.config.recipe import Recipe
from ray_ban.config.spaces import Training
from ray_ban.store import RunStore

CHECKPOINT_FILE = "chain_state.pt"
FAULT_ENV = "RAY_BAN_FAULT"  # test hook, "GENERATION:EPOCH[:RANK]": that rank SIGKILLs itself once after that epoch
GROUP_TIMEOUT = timedelta(minutes=30)  # as Ray's TorchConfig: a slow rank (data download) is not a failure


def _trainings(raw: list[dict]) -> list[Training]:
    return [Training(**t) for t in raw]


def _free_address() -> str:
    """``tcp://ip:port`` on this node with a port the OS just handed out (how Ray's TorchConfig picks one)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"tcp://{ray.util.get_node_ip_address()}:{port}"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """The chain's DDP group across this run's workers: gloo on CPU, NCCL on GPU; none for one worker.

    Rank 0 picks the rendezvous address and Train's collective broadcasts it (every rank calls this)."""
    context = ray.train.get_context()
    world_size, rank = context.get_world_size(), context.get_world_rank()
    if world_size == 1:
        yield
        return
    address = ray.train.collective.broadcast_from_rank_zero(_free_address() if rank == 0 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=address, rank=rank,
                            world_size=world_size, timeout=GROUP_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def train_chain(config: dict) -> None:
    """The Train worker loop: every rank runs the chain's generations in lockstep (DDP)."""
    store = RunStore(config["run_dir"])
    trainings = _trainings(config["trainings"])
    teachers = {t.key: t for t in _trainings(config["teachers"])}
    recipe = Recipe.from_dict(config["recipe"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    audit(f"placement/{config['chain_id']}-rank{rank}-{os.getpid()}.json",  # test hook: where Ray put this rank
          lambda: {"chain": config["chain_id"], "rank": rank, "node_id": ray.get_runtime_context().get_node_id()})
    data = prepare_data(config["data"], config.get("data_root"), config.get("download", False))
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        resume = Resume(saved["key"], saved["engine"], saved["history"])
    group_id = current_group_id()

    def report(training: Training, epoch_report, state_fn, history) -> None:
        metrics = {**epoch_report.to_dict(), "generation": training.generation, "model_key": training.key,
                   "chain_id": config["chain_id"], "generations": len(trainings) and trainings[-1].generation,
                   "epochs_total": recipe.epochs, GROUP_KEY: group_id}
        metrics = {k: (float("nan") if v is None else v) for k, v in metrics.items()}
        name = f"checkpoint_{training.key}_e{epoch_report.epoch:04d}"
        if rank != 0:
            ray.train.report(metrics)
        elif store.remote:  # object storage: upload in the background while the next epoch trains
            folder = tempfile.mkdtemp(prefix="ray-ban-ckpt-")  # Ray deletes it once uploaded
            torch.save({"key": training.key, "engine": state_fn(), "history": history}, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name,
                             checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)
        else:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"key": training.key, "engine": state_fn(), "history": history}, Path(folder) / CHECKPOINT_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)
        inject_fault(store, config["chain_id"], training, epoch_report.epoch, rank, name)

    device = ray.train.torch.get_device()
    share = float(config["resources"].get("gpus_per_worker", 0))
    if device.type == "cuda" and 0 < share < 1:  # a packed chain keeps to its fraction of the card's memory
        torch.cuda.set_per_process_memory_fraction(share, device)
    with process_group(device):
        # a failure is left in the store; the trial raises it without retrying a deterministic NaN
        run_chain(trainings, teachers, recipe, data, store, device=device, resume=resume, on_epoch=report,
                  compile=config.get("compile", False), board_log=board_logs(config.get("board")),
                  stopping=config.get("stopping"))


def recorded_checkpoints(store: RunStore, chain_id: str) -> set[str]:
    """The checkpoint folders Train's controller has recorded for a chain's run: what a restart resumes from
    (its checkpoint manager's snapshot in the run folder; a snapshot being rewritten reads as none yet)."""
    path = f"ray/{chain_id}/{CHECKPOINT_MANAGER_SNAPSHOT_FILENAME}"
    try:
        snapshot = store.read_json(path) if store.exists(path) else {}
    except (OSError, ValueError):
        return set()
    return {result["checkpoint_dir_name"] for result in snapshot.get("checkpoint_results", [])}


def inject_fault(store: RunStore, chain_id: str, training: Training, epoch: int, rank: int, checkpoint: str) -> None:
    """Test hook: with RAY_BAN_FAULT=G:E[:R], rank R SIGKILLs itself once after epoch E of generation G, and only
    once Train has recorded that epoch's checkpoint, so that the restarted group must resume from it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = [int(p) for p in spec.split(":")]
    if (training.generation, epoch, rank) != (parts[0], parts[1], parts[2] if len(parts) > 2 else 0):
        return
    marker = f"faults/{training.key}-e{epoch}-r{rank}"
    if store.exists(marker):
        return
    deadline = time.monotonic() + 120  # bounded: a checkpoint never recorded then shows as a fresh restart
    while checkpoint not in recorded_checkpoints(store, chain_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    store.write_bytes(marker, b"")
    os.kill(os.getpid(), signal.SIGKILL)


def board_logs(board: Optional[dict]):
    """``run_chain``'s board_log: each generation's TensorBoard run, from the trial's board config
    ({"root": folder, "runs": key -> {"run", "hparams"}}); None for a training it does not name."""
    from ray_ban.results.tensorboard_runs import GenerationLog

    def log(training: Training, start_epoch: int) -> Optional[GenerationLog]:
        if not board or training.key not in board["runs"]:
            return None
        run = board["runs"][training.key]
        return GenerationLog(board["root"], run["run"], run["hparams"], start_epoch)

    return log
