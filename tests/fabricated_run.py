"""A finished run folder written without Ray: every model's summary, history and test predictions through
RunStore, as a chain's workers would leave them, for tests of results, cells, comparisons and the report."""

from pathlib import Path

import torch
import yaml

from ray_ban.core import metrics
from ray_ban.config import spaces
from ray_ban.store import RunStore

SPACE = {
    "name": "stats", "dataset": "synthetic", "seeds": 3,
    "recipe": {"epochs": 2, "batch_size": 64},
    "columns": {"params": "params", "Teacher": "teacher", "BAN-1": "ban/1", "BAN-2": "ban/2", "Ens*2": "ban/ens2",
                "IndEns*2": "ban/ind2", "Baseline": "base/0"},
    "rows": [{"row": "A", "teacher": "wrn-10-1",
              "chains": {"ban": {"loss": "ban", "generations": 2, "independent": 2},
                         "base": {"baseline": True, "student": "wrn-10-1"}},
              "paper": {"params": "77.9k", "Teacher": 60.0, "BAN-1": 1.0, "BAN-2": None}}],
}
SAMPLES, CLASSES = 200, 10
# how strongly each role's logits point at the label: students better than their teacher, by seed
STRENGTH = {"teacher": 1.0, "baseline": 0.9, "independent": 1.1, "student": 1.4}


def fabricate_run(folder: Path, space: dict = SPACE) -> tuple[spaces.SweepPlan, RunStore, Path]:
    """Write the space file, load its plan and store every model of it as finished; (plan, store, space file)."""
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    plan = spaces.load(str(path))
    store = RunStore(folder / "runs" / plan.name)
    labels = torch.arange(SAMPLES) % CLASSES
    for training in plan.trainings():
        generator = torch.Generator().manual_seed(training.seed)
        logits = torch.randn(SAMPLES, CLASSES, generator=generator)
        logits[torch.arange(SAMPLES), labels] += STRENGTH[training.role] + 0.2 * training.generation
        store.save_predictions(training.key, logits, labels)
        error = metrics.error_rate(store.load_predictions(training.key)[0], labels)  # from the stored fp16 logits
        store.write_json(store.model_file(training.key, "history.json"),
                         [{"epoch": 1, "test_error": error + 5, "train_loss": 2.0}, {"epoch": 2, "test_error": error, "train_loss": 1.5}])
        store.write_json(store.model_file(training.key, "summary.json"),
                         {"parameters": 77_900, "epochs": 2, "final_test_error": error, "best_test_error": error,
                          "test_loss": metrics.mean_nll(logits, labels), "wall_time_s": 1.5})
    return plan, store, path
