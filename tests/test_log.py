"""The ray_ban logger: a run shows its records on a stream, writes them to its log file, and leaves the
logger as it found it; without a stream they reach the caller's own logging set-up."""

import io
import logging
import sys

from ray_ban import log


class Collected(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_run_shows_info_lines_on_its_stream_and_in_its_log_file_then_restores_the_logger(tmp_path):
    logger, root_collected = logging.getLogger("ray_ban"), Collected()
    logging.getLogger().addHandler(root_collected)
    before = (logger.level, logger.propagate, list(logger.handlers))
    stream = io.StringIO()
    try:
        with log.for_run(stream, tmp_path / "ray.log"):
            log.get("progress").info("[A.ban.seed0] gen 1/1 epoch 1/2: loss 1.000, test error 50.00%")
            log.get("sweep").error("ray-ban: FAILED A.ban.seed0: boom")
            log.get("sweep").debug("not shown")
    finally:
        logging.getLogger().removeHandler(root_collected)
    assert stream.getvalue().splitlines() == ["[A.ban.seed0] gen 1/1 epoch 1/2: loss 1.000, test error 50.00%",
                                              "ray-ban: FAILED A.ban.seed0: boom"]  # bare lines, errors too
    assert root_collected.messages == []  # not also through the root logger's handlers: no line twice
    written = (tmp_path / "ray.log").read_text().splitlines()
    assert len(written) == 2 and " ray_ban.progress INFO [A.ban.seed0]" in written[0]
    assert " ray_ban.sweep ERROR ray-ban: FAILED" in written[1]
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_on_stdout_warnings_and_errors_go_to_stderr(tmp_path, capsys):
    with log.for_run(sys.stdout, tmp_path / "ray.log"):
        log.get("sweep").info("the table")
        log.get("sweep").warning("ray-ban: warning: report not written")
    out, err = capsys.readouterr()
    assert out == "the table\n" and err == "ray-ban: warning: report not written\n"


def test_without_a_stream_the_records_reach_the_callers_handlers_at_the_level_they_set(tmp_path):
    logger, caller = logging.getLogger("ray_ban"), Collected()
    logger.addHandler(caller)
    try:
        with log.for_run(False, tmp_path / "ray.log"):  # the logger's level is unset: a run's lines are INFO
            log.get("progress").info("epoch line")
        logger.setLevel(logging.WARNING)  # the caller asked for warnings only: respected
        with log.for_run(None, tmp_path / "ray.log"):
            log.get("progress").info("hidden")
            log.get("sweep").warning("shown")
    finally:
        logger.removeHandler(caller)
        logger.setLevel(logging.NOTSET)
    assert caller.messages == ["epoch line", "shown"]
