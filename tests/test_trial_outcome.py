"""How a sweep reads each finished Tune trial: the chain it ran and its one-line error."""

from ray.tune import Result

from ray_ban.orchestration.sweep import trial_outcome


def test_a_trial_whose_actor_never_ran_names_its_chain_and_its_error():
    # what Tune returns for a trial cancelled before it started (its owner unreachable, its node lost): no report,
    # so no config in its metrics; the sweep read the chain from the config and died with a TypeError traceback
    never_ran = Result(metrics={}, checkpoint=None, path="/runs/t5/ray/sweep/A.ban.seed0",
                       error=RuntimeError("The actor died unexpectedly before finishing this task."))
    assert never_ran.config is None
    assert trial_outcome(never_ran) == ("A.ban.seed0", "The actor died unexpectedly before finishing this task.")


def test_a_finished_trial_in_object_storage_names_its_chain():
    done = Result(metrics={"config": {"chain": {"chain_id": "B.banl.seed2"}}, "done": True}, checkpoint=None,
                  error=None, path="bucket/runs/t5/ray/sweep/B.banl.seed2")  # a path in S3, as pyarrow.fs names it
    assert trial_outcome(done) == ("B.banl.seed2", None)
