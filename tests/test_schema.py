"""The space-file schema: pydantic models whose errors are one line with the key path, and the JSON Schema
that `--schema` prints for editors, which agrees with the loader on every shipped table and on broken files."""

import json

import jsonschema
import pytest
import yaml

from ray_ban.cli import sweep
from ray_ban.config import spaces


def space(**changes) -> dict:
    raw = {"name": "mine", "dataset": "synthetic", "recipe": {"epochs": 1},
           "rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}}}]}
    raw.update(changes)
    return raw


def printed_schema(capsys) -> dict:
    assert sweep.main(["--schema"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_printed_schema_is_valid_and_accepts_every_shipped_table(capsys):
    schema = printed_schema(capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in spaces.table_names():
        raw = spaces.read_yaml(spaces.resolve(name))
        assert not list(validator.iter_errors(raw)), name
        spaces.expand(raw, name)  # and the loader agrees
    recipe = schema["$defs"]["RecipeValues"]["properties"]
    assert recipe["schedule"]["enum"][0] == "multistep" and recipe["epochs"]["default"] == 200


BROKEN = [
    (lambda r: r["rows"][0]["chains"]["ban"].update(generatons=2),
     "rows[0].chains.ban.generatons: unknown key; did you mean 'generations'?"),
    (lambda r: r.update(rows={"r1": {}}), "rows: must be a list, got {'r1': {}}; add rows with a teacher and chains"),
    (lambda r: r.pop("rows"), "rows: is missing; add rows:"),
    (lambda r: r.update(rows=[]), "rows: must not be empty"),
    (lambda r: r["rows"][0].update(chains={}), "rows[0].chains: must not be empty"),
    (lambda r: r["rows"][0]["chains"]["ban"].update(generations=-1), "rows[0].chains.ban.generations: must be at least 0, got -1"),
    (lambda r: r["rows"][0]["chains"]["ban"].update(loss_params=[1]), "rows[0].chains.ban.loss_params: must be a mapping, got [1]"),
    (lambda r: r["rows"][0].update(teacher=7), "rows[0].teacher: must be a string, got 7"),
    (lambda r: r.update(presets={"smoke": {"resources": {"cpus_per_worker": 0}}}),
     "presets.smoke.resources.cpus_per_worker: must be above 0, got 0; e.g. 0.5"),
    (lambda r: r.update(presets={"smoke": {"seedz": 2}}), "presets.smoke.seedz: unknown key; did you mean 'seeds'?"),
    (lambda r: r.update(seeds="3-1"), "seeds: the range '3-1' runs backwards; write 1-3"),
    (lambda r: r["rows"][0].update(paper={"Teacher": [5.0]}), "rows[0].paper.Teacher: must be a number, a text such as"),
    (lambda r: r.update(columnz={}), "columnz: unknown key; did you mean 'columns'?"),
]


@pytest.mark.parametrize("break_it,expected", BROKEN, ids=[expected.split(":")[0] for _, expected in BROKEN])
def test_a_broken_file_is_one_line_with_the_key_path_and_the_schema_agrees(capsys, break_it, expected):
    validator = jsonschema.Draft202012Validator(printed_schema(capsys))
    raw = space()
    break_it(raw)
    with pytest.raises(spaces.SpaceError) as error:
        spaces.expand(raw, "mine.yaml")
    message = str(error.value)
    assert message.startswith(f"mine.yaml: {expected}") and "\n" not in message, message
    if "runs backwards" not in expected:  # a range's direction is beyond a JSON Schema pattern
        assert list(validator.iter_errors(raw)), expected


def test_a_key_that_yaml_reads_as_a_number_is_named(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space(rows=[{"row": 100, "teacher": "wrn-10-1", "chains": {1: {"loss": "ban"}}}])))
    with pytest.raises(spaces.SpaceError, match=r"rows\[0\].chains.1: the key 1 is not text; write the key as a name"):
        spaces.load(str(path))
    path.write_text(yaml.safe_dump(space(rows=[{"row": 100, "teacher": "wrn-10-1", "chains": {"ban": {}}}])))
    assert spaces.load(str(path)).chains[0].row == "100"  # a row name written as a number is still a name
