"""Model registry: build the paper's architectures by name, count them, share stems with teachers.

Pure PyTorch. Families live one per file and register name patterns (``wrn-{d}-{k}``) on import.
"""

from __future__ import annotations

import torch
from torch import nn

from ray_ban.models import ban_students, densenet, language, preresnet, resnet9, wide_resnet  # noqa: F401  (imports register the families)
from ray_ban.models.registry import examples, lookup, patterns

__all__ = [
    "available", "build", "check_pair", "examples", "inherit_from_teacher", "is_language_model", "parameter_count",
]


def build(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build a model by registered name, e.g. ``build("wrn-28-10", 100, dropout=0.3)``."""
    builder, fields = lookup(name)
    return builder(num_classes, **fields, **kwargs)


def available() -> list[str]:
    """The registered name patterns (``examples()`` lists the paper's concrete names)."""
    return patterns()


def is_language_model(name: str) -> bool:
    """Whether ``name`` builds a language model (token ids in, next-token logits out); unknown names raise."""
    return lookup(name)[0].__module__ == language.__name__


def parameter_count(model: nn.Module) -> int:
    """All parameters, trainable or frozen; works on meta-device models, so big nets cost nothing."""
    return sum(p.numel() for p in model.parameters())


def _shared_pairs(student: nn.Module, teacher: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """The (name, student layer, teacher layer) pairs a Table 5 student takes over, shape-checked."""
    pairs = [("stem", student.stem, teacher.stem), ("fc", student.fc, teacher.fc)]
    for what, mine, theirs in pairs:
        for p in ("weight", "bias"):
            a, b = getattr(mine, p, None), getattr(theirs, p, None)
            if (a is None) != (b is None) or (a is not None and a.shape != b.shape):
                shape_a, shape_b = (None if t is None else tuple(t.shape) for t in (a, b))
                raise ValueError(f"cannot take the teacher's {what}.{p}: student has {shape_a}, teacher {shape_b}")
    return pairs


def inherit_from_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's stem conv and final fc into the student and freeze them (Table 5 students)."""
    for _, mine, theirs in _shared_pairs(student, teacher):
        with torch.no_grad():
            for name, p in mine.named_parameters():
                p.copy_(getattr(theirs, name))
                p.requires_grad_(False)


def check_pair(teacher_name: str, student_name: str, num_classes: int, **student_kwargs: object) -> None:
    """Fail fast (ValueError) if a student that inherits stem/fc cannot take this teacher's; builds on meta."""
    with torch.device("meta"):
        student = build(student_name, num_classes, **student_kwargs)
        if not getattr(student, "inherits_stem_and_fc", False):
            return
        teacher = build(teacher_name, num_classes)
    try:
        _shared_pairs(student, teacher)
    except ValueError as err:
        raise ValueError(f"student {student_name!r} cannot inherit from teacher {teacher_name!r}: {err}") from None
