"""The teacher bank: finished generation-0 models (teachers, baselines, independent models) shared by every
sweep that needs them. Tables 2, 4 and 5 all start from the same DenseNet-90-60 on CIFAR-100; with a bank
the first sweep trains it and the others copy it.

An entry is addressed by the model's key (a hash of its architecture and arguments, data and subsets,
recipe, seed, loss and the family's code versions, ``config.spaces._training``) and the precision it ran
in (``auto`` is bf16 on a GPU and fp32 on a CPU: different models), and is reused only when the full
sha256 of that identity (``Training.digest``) matches too. Layout of ``<bank>/`` (a local folder or any
``pyarrow.fs`` URI, like a run folder)::

    <key>.<precision>/complete.json     the entry, written last: digest, key, which version folder holds it
    <key>.<precision>/v-<id>/           model.pt, history.json, summary.json, predictions.arrow (hard links
                                        to the run folder's files where both are local folders)
    <key>.<precision>/lease.json        who is training it now (owner, host, pid, heartbeat count and time)

``location`` resolves ``--teachers``; ``teachers.TeacherBank`` finds, copies and publishes entries and
runs the train-once protocol over ``lease.Lease``. Ray-free and torch-free: the stored files' bytes are
copied as they are (the Ray side is ``orchestration.bank_trial``).
"""

from ray_ban.bank.location import ENV, check_writable, entry_name, resolve_location
from ray_ban.bank.teachers import TeacherBank

__all__ = ["ENV", "TeacherBank", "check_writable", "entry_name", "resolve_location"]
