"""The Tune trainable of every trial with a teacher bank: a generation-0 model is reused from the bank,
or trained once (however many sweeps want it at the same time) and published there; other trials are
``orchestration.chain.chain_trial`` itself. Like ``chain``, it never imports torch."""

from __future__ import annotations

from ray_ban import log
from ray_ban.bank import TeacherBank, entry_name
from ray_ban.config.recipe import precision_on
from ray_ban.orchestration.chain import chain_trial
from ray_ban.store import RunStore


def bank_entry(config: dict) -> tuple[str, dict] | None:
    """(bank location, the root training) of a generation-0 trial with a bank; None for any other trial."""
    trainings, location = config["trainings"], config.get("teacher_bank")
    if not location or config["teachers"] or len(trainings) != 1 or trainings[0]["generation"] != 0:
        return None
    return (location, trainings[0]) if trainings[0].get("digest") else None


def banked_trial(trial_config: dict) -> dict:
    """``chain_trial``, with a generation-0 model taken from (or given to) the teacher bank."""
    config = trial_config["chain"]
    found = bank_entry(config)
    store = RunStore(config["run_dir"])
    if found is None or store.is_done(found[1]["key"]):
        return chain_trial(trial_config)
    location, training = found
    device = "cuda" if float(config["resources"].get("gpus_per_worker", 0)) > 0 else "cpu"
    name = entry_name(training["key"], precision_on(config["recipe"]["precision"], device))
    started: list[bool] = []
    results: list[dict] = []

    def train() -> None:
        started.append(True)
        results.append(chain_trial(trial_config))

    try:
        reused = TeacherBank(location).provide(name, training["digest"], store, training["key"], train=train)
    except Exception as error:  # noqa: BLE001 - an unreachable bank must not fail a sweep that can train
        if started:
            raise  # the training itself failed: the trial reports it
        log.get("bank").warning("teacher bank %s not used for %s: %s", location, training["key"],
                                                  error)
        return chain_trial(trial_config)
    if reused is None:
        return results[0]
    return {**chain_trial(trial_config), "reused_from": reused}
