"""One generation in pure PyTorch: learning, distillation, checkpoint/resume, NaN detection."""

import pytest
import torch

from ray_ban import models
from ray_ban.data import synthetic
from ray_ban.core.engine import Generation, NonFiniteLoss
from ray_ban.config.recipe import Recipe, lr_factor

DATA = synthetic(10, 1024, 300)
RECIPE = Recipe(epochs=2, batch_size=64, lr=0.05)


def student(seed=0, name="wrn-10-1"):
    torch.manual_seed(seed)
    return models.build(name, 10)


def test_label_training_learns_and_reports_every_metric():
    generation = Generation(student(), DATA, RECIPE, seed=0)
    reports = list(generation.run())
    assert [r.epoch for r in reports] == [1, 2]
    assert reports[-1].test_error < 75  # chance is 90%
    assert reports[-1].agreement is None and reports[-1].kl is None
    assert 0 <= reports[-1].ece <= 100 and reports[-1].images_per_s > 0
    assert generation.test_logits.shape == (300, 10)
    assert reports[0].lr == pytest.approx(0.05)


def test_distillation_freezes_the_teacher_and_tracks_agreement():
    recipe = Recipe(epochs=3, batch_size=64, lr=0.05, schedule="constant")
    teacher = Generation(student(0), DATA, recipe, seed=0)
    list(teacher.run())
    frozen = {k: v.clone() for k, v in teacher.student.state_dict().items()}
    pupil = Generation(student(1), DATA, recipe, loss="ban", teacher=teacher.student, seed=1)
    reports = list(pupil.run())
    assert all(torch.equal(frozen[k], v) for k, v in teacher.student.state_dict().items())
    assert not any(p.requires_grad for p in teacher.student.parameters())
    assert reports[-1].agreement > 40 and reports[-1].kl >= 0


def test_teacher_and_student_must_differ():
    model = student()
    with pytest.raises(ValueError, match="same object"):
        Generation(model, DATA, RECIPE, loss="ban", teacher=model)
    with pytest.raises(ValueError, match="needs a teacher"):
        Generation(model, DATA, RECIPE, loss="ban")


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run():
    straight = Generation(student(3), DATA, RECIPE, seed=3)
    full = list(straight.run())
    first = Generation(student(3), DATA, RECIPE, seed=3)
    first.train_epoch()
    state = {k: v for k, v in first.state_dict().items()}
    resumed = Generation(student(99), DATA, RECIPE, seed=3)  # other init: the checkpoint must overwrite it
    resumed.load_state_dict(state)
    rest = list(resumed.run())
    assert [r.epoch for r in rest] == [2]
    assert rest[0].train_loss == pytest.approx(full[1].train_loss, rel=1e-4)
    assert torch.allclose(resumed.test_logits, straight.test_logits, atol=1e-4)


def test_non_finite_loss_stops_the_generation():
    generation = Generation(student(), DATA, Recipe(epochs=1, batch_size=64, lr=1e30, schedule="constant"), seed=0)
    with pytest.raises(NonFiniteLoss, match="epoch 1"):
        generation.train_epoch()


def test_validation_split_is_evaluated_separately():
    data = DATA.with_validation(200)
    report = Generation(student(), data, Recipe(epochs=1, batch_size=64, lr=0.05)).train_epoch()
    assert report.val_error is not None and report.val_loss is not None


def test_frozen_parameters_are_left_out_of_the_optimiser():
    teacher = models.build("densenet-16-12", 10)
    pupil = models.build("ban-wrn-1-0.5", 10, teacher="densenet-16-12")
    models.inherit_from_teacher(pupil, teacher)
    generation = Generation(pupil, DATA, Recipe(epochs=1, batch_size=64), loss="ban", teacher=teacher)
    optimised = {id(p) for group in generation.optimizer.param_groups for p in group["params"]}
    assert id(pupil.stem.weight) not in optimised and id(pupil.fc.weight) not in optimised
    before = pupil.fc.weight.clone()
    generation.train_epoch()
    assert torch.equal(before, pupil.fc.weight)


def test_schedules_follow_the_paper_shape():
    paper = Recipe()
    assert lr_factor(paper, 59, 200) == 1 and lr_factor(paper, 60, 200) == pytest.approx(0.2)
    assert lr_factor(paper, 160, 200) == pytest.approx(0.2**3)
    one_cycle = Recipe(schedule="onecycle")
    assert lr_factor(one_cycle, 20, 100) == pytest.approx(1) and lr_factor(one_cycle, 100, 100) == 0
    with pytest.raises(ValueError, match="unknown recipe key.*lr_milestone"):
        Recipe.from_dict({"lr_milestone": [0.5]})
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Recipe(epochs=0)


def test_onecycle_cosine_cycles_momentum_and_resumes_exactly():
    recipe = Recipe(epochs=2, batch_size=128, lr=0.1, schedule="onecycle-cosine", momentum=0.9)
    whole = Generation(student(3, "resnet9-4"), DATA, recipe, seed=3)
    assert whole.optimizer.param_groups[0]["momentum"] == pytest.approx(0.95)  # momentum falls as the lr rises
    assert whole.train_epoch().lr == pytest.approx(0.1 / 25)
    whole.train_epoch()
    first = Generation(student(3, "resnet9-4"), DATA, recipe, seed=3)
    first.train_epoch()
    resumed = Generation(student(99, "resnet9-4"), DATA, recipe, seed=3)
    resumed.load_state_dict(first.state_dict())
    resumed.train_epoch()
    assert torch.allclose(resumed.test_logits, whole.test_logits, atol=1e-5)
    assert resumed.optimizer.param_groups[0]["momentum"] == pytest.approx(whole.optimizer.param_groups[0]["momentum"])
