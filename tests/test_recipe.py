"""Recipe values the optimiser, the schedule or the loader would reject fail at load, in one line naming key and fix."""

import pytest
import torch

from ray_ban.config import spaces
from ray_ban.config.recipe import Recipe


def space(**recipe) -> dict:
    return {"name": "mine", "dataset": "synthetic", "recipe": {"epochs": 1, "batch_size": 64, **recipe},
            "rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban"}}}]}


REJECTED = [
    ({"momentum": 0}, "nesterov needs momentum > 0 (got momentum 0): set nesterov: false"),
    ({"momentum": 0.0, "nesterov": True}, "nesterov needs momentum > 0"),
    ({"momentum": -0.1, "nesterov": False}, "momentum must be in [0, 1), got -0.1"),
    ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ({"lr": -0.1}, "lr must be positive, got -0.1"),
    ({"lr": 0}, "lr must be positive"),
    ({"weight_decay": -0.0005}, "weight_decay must be >= 0, got -0.0005"),
    ({"lr_milestones": [0.6, 0.3]}, "lr_milestones must increase, got [0.6, 0.3]: sort them"),
    ({"lr_milestones": [0.3, 0.3]}, "lr_milestones must increase"),
    ({"lr_milestones": [0.3, 1.5]}, "lr_milestones are fractions of the epochs in (0, 1)"),
    ({"lr_milestones": [0.0]}, "lr_milestones are fractions of the epochs in (0, 1)"),
    ({"lr_decay": 0}, "lr_decay must be in (0, 1]"),
    ({"lr_decay": 5}, "lr_decay must be in (0, 1]"),
    ({"warmup_fraction": 1.0}, "warmup_fraction must be in [0, 1)"),
    ({"warmup_fraction": -0.1}, "warmup_fraction must be in [0, 1)"),
    ({"crop_padding": -4}, "crop_padding must be >= 0 pixels"),
    ({"eval_batch_size": 0}, "eval_batch_size must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"grad_clip": -1.0}, "grad_clip must be >= 0"),
]


MISTYPED = [
    ({"schedule": "step"}, "recipe.schedule: must be one of 'multistep', 'onecycle', 'onecycle-cosine', 'cosine', "
                           "'constant' or 'plateau', got 'step'; use one of those"),
    ({"precision": "fp8"}, "recipe.precision: must be one of 'auto', 'bf16', 'fp16', 'tf32' or 'fp32', got 'fp8'"),
    ({"precision": True}, "recipe.precision: must be one of"),
    ({"crop_padding_mode": "edge"}, "recipe.crop_padding_mode: must be one of 'reflect' or 'zeros', got 'edge'"),
    ({"sync_batchnorm": "auto"}, "recipe.sync_batchnorm: must be true or false, got 'auto'; write true or false"),
    ({"epochs": 2.5}, "recipe.epochs: must be an integer, got 2.5"),
    ({"lr": "0.1"}, "recipe.lr: must be a number, got '0.1'"),
    ({"lr": float("nan")}, "recipe.lr: must be a finite number, got nan"),
    ({"lr_milestones": [0.3, True]}, "recipe.lr_milestones[1]: must be a number, got True"),
    ({"presicion": "fp32"}, "recipe.presicion: unknown key; did you mean 'precision'?"),
]


def test_recipe_from_dict_names_the_key_for_code_that_builds_one():
    with pytest.raises(ValueError, match=r"^unknown recipe key lr_milestone; did you mean 'lr_milestones'\?$"):
        Recipe.from_dict({"lr_milestone": [0.5]})
    with pytest.raises(ValueError, match=r"^recipe key batch_size must be an integer, got '64'"):
        Recipe.from_dict({"batch_size": "64"})
    assert Recipe.from_dict({"lr": 1}).lr == 1.0 and isinstance(Recipe.from_dict({"lr": 1}).lr, float)


# values out of range: the Recipe's own checks, under the recipe's name; wrong types and keys: the key path itself
CASES = [(recipe, "recipe: ", expected) for recipe, expected in REJECTED] + [(recipe, "", expected) for recipe, expected in MISTYPED]


@pytest.mark.parametrize("recipe,prefix,expected", CASES, ids=[repr(r) for r, _, _ in CASES])
def test_unusable_recipes_fail_at_load_with_one_line(recipe, prefix, expected):
    with pytest.raises(spaces.SpaceError) as error:
        spaces.expand(space(**recipe), "mine.yaml")
    message = str(error.value)
    assert message.startswith(f"mine.yaml: {prefix}") and expected in message and "\n" not in message


def test_row_and_preset_recipes_are_checked_too():
    raw = space()
    raw["rows"][0]["recipe"] = {"momentum": 0}
    with pytest.raises(spaces.SpaceError, match=r"rows\[0\].recipe: nesterov needs momentum"):
        spaces.expand(raw, "mine.yaml")
    raw = {**space(), "presets": {"smoke": {"recipe": {"precision": "half"}}}}
    with pytest.raises(spaces.SpaceError, match=r"presets.smoke.recipe.precision: must be one of .*got .half."):
        spaces.expand(raw, "mine.yaml", "smoke")


@pytest.mark.parametrize("values", [
    {"momentum": 0.0, "nesterov": False}, {"momentum": 0.9, "nesterov": True}, {"warmup_fraction": 0.5, "lr_decay": 1.0},
    {"precision": "fp16", "crop_padding_mode": "zeros", "sync_batchnorm": False, "crop_padding": 0},
])
def test_accepted_recipes_make_an_optimiser(values):
    recipe = spaces.expand(space(**values), "mine.yaml").recipe
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr, momentum=recipe.momentum,
                    nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    assert recipe == Recipe.from_dict(recipe.to_dict())


def test_onecycle_cosine_is_torchs_one_cycle_with_its_momentum_cycle() -> None:
    import torch

    from ray_ban.config.recipe import lr_factor

    recipe = Recipe(schedule="onecycle-cosine", lr=0.2, epochs=6, momentum=0.9)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), 0.2, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=117, pct_start=0.2)
    for step in range(117):
        assert abs(opt.param_groups[0]["lr"] - 0.2 * lr_factor(recipe, step, 117)) < 1e-12
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="onecycle-cosine cycles momentum"):
        Recipe(schedule="onecycle-cosine", momentum=0.97)
