"""Losses: values and gradients against the paper's equations, computed with autograd."""

import pytest
import torch
import torch.nn.functional as F

from ray_ban.core.losses import LOSSES, check_loss_params, get_loss, permute_dark_knowledge

torch.manual_seed(0)
B, C = 8, 10


def logits_and_labels():
    z = torch.randn(B, C, requires_grad=True)
    t = torch.randn(B, C, requires_grad=True)
    y = torch.randint(0, C, (B,))
    return z, t, y


def grad_of(loss_name, z, t, y, **params):
    loss = LOSSES[loss_name](z, t, y, **params)
    (grad,) = torch.autograd.grad(loss, z)
    return loss, grad


def test_label_is_cross_entropy():
    z, t, y = logits_and_labels()
    assert torch.allclose(LOSSES["label"](z, None, y), F.cross_entropy(z, y))


def test_ban_gradient_is_q_minus_p_eq5():
    z, t, y = logits_and_labels()
    _, grad = grad_of("ban", z, t, y)
    q, p = torch.softmax(z, 1), torch.softmax(t, 1)
    assert torch.allclose(grad, (q - p) / B, atol=1e-6)


def test_ban_label_adds_weighted_label_gradient():
    z, t, y = logits_and_labels()
    _, grad = grad_of("ban+l", z, t, y, label_weight=0.3)
    q, p, onehot = torch.softmax(z, 1), torch.softmax(t, 1), F.one_hot(y, C).float()
    assert torch.allclose(grad, ((q - p) + 0.3 * (q - onehot)) / B, atol=1e-6)


def test_cwtm_gradient_is_confidence_weighted_label_gradient_eq10():
    z, t, y = logits_and_labels()
    _, grad = grad_of("cwtm", z, t, y)
    q, p, onehot = torch.softmax(z, 1), torch.softmax(t, 1), F.one_hot(y, C).float()
    w = p.max(1).values / p.max(1).values.sum()
    assert torch.allclose(grad, w[:, None] * (q - onehot), atol=1e-6)
    assert torch.allclose(w.sum(), torch.tensor(1.0))


def test_dkpp_gradient_is_q_minus_permuted_p_eq7():
    z, t, y = logits_and_labels()
    _, grad = grad_of("dkpp", z, t, y, generator=torch.Generator().manual_seed(3))
    q, p = torch.softmax(z, 1), torch.softmax(t, 1)
    p_tilde = permute_dark_knowledge(p, torch.Generator().manual_seed(3))
    assert torch.allclose(grad, (q - p_tilde) / B, atol=1e-6)
    # p~ keeps the top entry in place and the rest is a permutation of the other entries
    assert torch.equal(p_tilde.argmax(1), p.argmax(1))
    assert torch.allclose(p_tilde.sort(1).values, p.sort(1).values)
    assert not torch.allclose(p_tilde, p)


def test_kd_matches_hinton_formula_with_batchmean():
    z, t, y = logits_and_labels()
    alpha, T = 0.7, 3.0
    loss = LOSSES["kd"](z, t, y, alpha=alpha, temperature=T)
    p_t, log_q = torch.softmax(t / T, 1), torch.log_softmax(z / T, 1)
    kl = (p_t * (p_t.log() - log_q)).sum(1).mean()
    assert torch.allclose(loss, (1 - alpha) * F.cross_entropy(z, y) + alpha * T * T * kl, atol=1e-6)


@pytest.mark.parametrize("name", ["ban", "ban+l", "cwtm", "dkpp", "kd"])
def test_teacher_never_receives_gradients(name):
    z, t, y = logits_and_labels()
    LOSSES[name](z, t, y).backward()
    assert t.grad is None and z.grad is not None


def test_distillation_from_itself_has_zero_ban_gradient():
    z = torch.randn(B, C, requires_grad=True)
    _, grad = grad_of("ban", z, z.detach().clone(), torch.zeros(B, dtype=torch.long))
    assert grad.abs().max() < 1e-6


def test_unknown_loss_and_parameter_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="unknown loss 'bann'.*ban\\+l"):
        get_loss("bann")
    with pytest.raises(ValueError, match="takes no parameter label_weigth.*label_weight"):
        check_loss_params("ban+l", {"label_weigth": 1})
    with pytest.raises(ValueError, match="needs a teacher"):
        LOSSES["ban"](torch.randn(2, 3), None, torch.zeros(2, dtype=torch.long))
