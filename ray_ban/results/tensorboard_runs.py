"""TensorBoard runs of a sweep: one run per trained model and per ensemble, each an HParams session.

Layout under ``<out>/<sweep>/tensorboard/``: ``<row>/<chain>-s<seed>/gen<k>`` for models (a shared
teacher appears once, under the first row that uses it, as ``<row>/teacher-s<seed>/gen0``; a chain's
independent label-only models as ``<row>/<chain>-s<seed>/independent<i>``) and
``<row>/<chain>-s<seed>/<ensemble>`` for ensembles (``ens<k>``, and ``ind<k>`` of independent models),
so TensorBoard's run list reads row / chain / generation, and the seeds of one chain stay apart.
Each run holds per-epoch scalars and an HParams session (start info with the run's
hyperparameters, end info with its status); the HParams dashboard builds its table from those
sessions and takes the final value of every scalar tag as a metric. No Ray here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from pyarrow.fs import FileType
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ray_ban.store import is_uri, join, split_location, sync_folder

# EpochReport field -> scalar tag
SCALAR_TAGS = {
    "train_loss": "train/loss",
    "lr": "train/learning_rate",
    "test_error": "test/error",
    "test_loss": "test/loss",
    "agreement": "test/agreement_with_teacher",
    "kl": "test/kl_student_teacher",
    "ece": "test/calibration_error",
    "val_error": "val/error",
    "val_loss": "val/loss",
    "test_perplexity": "test/perplexity",  # language models
    "val_perplexity": "val/perplexity",
}
FINAL_TAGS = ("final/test_error", "final/best_test_error", "final/parameters")
HPARAM_TYPES = (bool, int, float, str)


def board_root(location: str | Path) -> str:
    """The TensorBoard folder of a run folder (a local path or a storage URI)."""
    return join(location, "tensorboard")


def model_run_name(row: str, chain_name: str, generation: int) -> str:
    return f"{row}/{chain_name}/gen{generation}"


def plan_runs(plan, searched: Optional[dict] = None) -> dict[str, dict]:
    """Model key -> {"run": run name, "hparams": flat dict} for every training of a SweepPlan.

    ``searched`` maps a chain_id to the hyperparameters a search chose for it (shown in HParams).
    """
    runs: dict[str, dict] = {}
    for chain in plan.chains:
        for training in chain.all_trainings:
            if training.key in runs:
                continue
            if training.role == "teacher":
                name = model_run_name(chain.row, f"teacher-s{chain.seed}", 0)
            elif training.role == "independent":  # beside the chain's gen<k> and ens<k>/ind<k> runs
                name = f"{chain.row}/{chain.name}-s{chain.seed}/independent{chain.independent.index(training)}"
            else:
                name = model_run_name(chain.row, f"{chain.name}-s{chain.seed}", training.generation)
            hp = _hparams(plan, plan.recipe_for(chain), chain, training)
            hp.update((searched or {}).get(chain.chain_id, {}))
            runs[training.key] = {"run": name, "hparams": clean_hparams(hp)}
    return runs


def search_runs(plan, chain, recipe, trial: str, hparams: dict) -> dict[str, dict]:
    """Runs of one search trial's generations, ``<row>/<chain>-s<seed>/<trial>/gen<k>``; HParams shows the
    trial and every searched value, so the dashboard can sort and plot trials by them."""
    runs = {}
    for training in chain.generations:
        hp = {**_hparams(plan, recipe, chain, training), "trial": trial, **hparams}
        runs[training.key] = {"run": model_run_name(chain.row, f"{chain.name}-s{chain.seed}/{trial}", training.generation),
                              "hparams": clean_hparams(hp)}
    return runs


def _hparams(plan, recipe, chain, training) -> dict:
    hp = {"row": chain.row, "chain": "" if training.role == "teacher" else chain.name, "role": training.role,
          "architecture": training.architecture, "loss": training.loss, "generation": training.generation,
          "seed": chain.seed, "init_seed": training.seed, "dataset": plan.dataset, "preset": plan.preset,
          "epochs": recipe.epochs, "lr": recipe.lr, "batch_size": recipe.batch_size,
          "weight_decay": recipe.weight_decay, "schedule": recipe.schedule}
    hp.update({f"loss.{k}": v for k, v in training.loss_params.items()})
    hp.update({f"model.{k}": v for k, v in training.model_kwargs.items()})
    return hp


def clean_hparams(values: dict) -> dict:
    """HParams accepts bool, int, float and str: anything else becomes its JSON text."""
    return {k: v if isinstance(v, HPARAM_TYPES) else json.dumps(v, sort_keys=True, default=str)
            for k, v in values.items() if v is not None}


class GenerationLog:
    """Writes one model's TensorBoard run as it trains (on rank 0 only).

    ``start_epoch`` > 0 after a resume: TensorBoard then drops the events a crashed attempt wrote
    for later epochs (``purge_step``), so a restarted generation shows one curve, not two.
    """

    def __init__(self, root: str | Path, run: str, hparams: dict, start_epoch: int = 0):
        # Storage URIs: write to a local staging folder and upload the run after every epoch (a resumed
        # attempt adds its own event file beside the first, and purge_step still applies across them)
        self.remote = join(root, run) if is_uri(root) and not str(root).startswith("file://") else None
        self.staging = tempfile.mkdtemp(prefix="ray-ban-tb-") if self.remote else None
        log_dir = self.staging if self.remote else str(Path(str(root).removeprefix("file://")) / run)
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=start_epoch + 1, flush_secs=10)
        _, start, _ = hparams_summaries(hparams, {})
        self.writer.file_writer.add_summary(start)

    def epoch(self, report: dict) -> None:
        step = report["epoch"]
        for field, tag in SCALAR_TAGS.items():
            value = report.get(field)
            if value is not None and value == value:  # skip None and NaN (undefined for this model)
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()
        self._upload()

    def _upload(self) -> None:
        if self.remote:
            sync_folder(self.staging, self.remote)

    def finish(self, summary: Optional[dict], failed: bool = False) -> None:
        """Final metrics for the HParams table, then the session's end status."""
        if summary is not None:
            step = int(summary.get("epochs") or 0)
            values = (summary.get("final_test_error"), summary.get("best_test_error"), summary.get("parameters"),
                      summary.get("test_perplexity"))
            for tag, value in zip(FINAL_TAGS + ("final/test_perplexity",), values):
                if value is not None:  # an LM ensemble has a perplexity but no error; image models no perplexity
                    self.writer.add_scalar(tag, value, step)
        _write_session_end(self.writer, failed)
        self.writer.close()
        self._upload()
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)


def _write_session_end(writer: SummaryWriter, failed: bool) -> None:
    """The HParams session-end record: success, or failure (a non-finite loss)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    info = SessionEndInfo(status=api_pb2.Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS"))
    content = HParamsPluginData(session_end_info=info, version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    writer.file_writer.add_summary(Summary(value=[
        Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))]))


def _remove_run(root: str | Path, run: str) -> None:
    """Delete a run folder before rewriting it whole (local or in storage)."""
    fs, path = split_location(join(root, run))
    if fs.get_file_info(path).type != FileType.NotFound:
        fs.delete_dir(path)


def write_ensemble_runs(records: list[dict], root: str | Path) -> int:
    """One run per finished ensemble of results.parquet's rows, rewritten whole each time; returns how many."""
    written = 0
    for r in records:
        if r["role"] != "ensemble" or r["status"] != "ok":
            continue
        chain_name, _, ensemble = r["chain"].partition("/")  # "<chain>/<ensemble name>"
        trial = f"{r['trial']}/" if r.get("trial") else ""  # a search's trials share the chain's name
        run = f"{r['row']}/{chain_name}-s{r['seed']}/{trial}{ensemble}"
        _remove_run(root, run)
        hp = clean_hparams({"row": r["row"], "chain": r["chain"], "role": "ensemble", "architecture": r["architecture"],
                            "loss": r["loss"], "generation": r["generation"], "seed": r["seed"], "dataset": r["dataset"],
                            "preset": r["preset"], "members": ",".join(str(m) for m in r["members"])})
        log = GenerationLog(root, run, hp)
        for tag, field in (("test/error", "final_test_error"), ("test/perplexity", "test_perplexity")):
            if r.get(field) is not None:
                log.writer.add_scalar(tag, r[field], r["generation"])
        log.finish({"final_test_error": r["final_test_error"], "best_test_error": r["best_test_error"],
                    "test_perplexity": r.get("test_perplexity"),
                    "parameters": r["parameters"], "epochs": r["generation"]})
        written += 1
    return written
