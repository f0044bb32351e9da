"""Tests for monai_ext.losses.multidomain.BranchMaskedDiceCELoss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from monai_ext.losses.multidomain import BranchMaskedDiceCELoss
from monai_ext.networks.med3d import med3d_resnet10
from monai_ext.networks.multidomain import PAD_LOGIT, MultiDomainSegmenter

SPATIAL = (6, 5, 4)


def _pad(logits: torch.Tensor, n_max: int) -> torch.Tensor:
    pad = torch.full((logits.shape[0], n_max - logits.shape[1], *logits.shape[2:]), PAD_LOGIT)
    return torch.cat([logits, pad], dim=1)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0), (0.3, 2.0)])
def test_equals_monai_dicece_on_single_domain(include_background, lambdas):
    torch.manual_seed(0)
    logits = torch.randn(3, 4, *SPATIAL)
    labels = torch.randint(0, 4, (3, 1, *SPATIAL)).float()
    ours = BranchMaskedDiceCELoss(include_background, lambda_dice=lambdas[0], lambda_ce=lambdas[1])
    reference = DiceCELoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        reduction="mean",
        lambda_dice=lambdas[0],
        lambda_ce=lambdas[1],
    )
    assert ours(logits, labels).item() == pytest.approx(reference(logits, labels).item(), abs=1e-5)


@pytest.mark.parametrize("include_background", [True, False])
def test_mixed_batch_is_mean_of_per_sample_losses(include_background):
    torch.manual_seed(1)
    counts = [2, 4, 3, 4]
    n_max = max(counts)
    own_logits = [torch.randn(1, n, *SPATIAL) for n in counts]
    labels = [torch.randint(0, n, (1, 1, *SPATIAL)).float() for n in counts]
    padded = torch.cat([_pad(lg, n_max) for lg in own_logits])
    reference = DiceCELoss(include_background=include_background, to_onehot_y=True, softmax=True)
    expected = torch.stack([reference(lg, lb) for lg, lb in zip(own_logits, labels)]).mean()
    got = BranchMaskedDiceCELoss(include_background)(padded, torch.cat(labels))
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_padded_channels_get_no_gradient():
    torch.manual_seed(2)
    logits = _pad(torch.randn(2, 2, *SPATIAL), 5).requires_grad_(True)
    labels = torch.randint(0, 2, (2, 1, *SPATIAL)).float()
    BranchMaskedDiceCELoss()(logits, labels).backward()
    assert torch.count_nonzero(logits.grad[:, 2:]) == 0
    assert logits.grad[:, :2].abs().sum() > 0


def test_gradients_reach_only_present_branches():
    torch.manual_seed(3)
    model = MultiDomainSegmenter(med3d_resnet10(), {"a": 3, "b": 2, "c": 4}).train()
    x = torch.randn(2, 1, 16, 16, 16)
    domain = torch.tensor([2, 0])
    labels = torch.stack([torch.randint(0, 4, (1, 16, 16, 16)), torch.randint(0, 3, (1, 16, 16, 16))]).float()
    BranchMaskedDiceCELoss()(model(x, domain), labels).backward()

    def grad_norm(name: str) -> float:
        grads = [p.grad for p in model.heads[name].parameters()]
        return sum(float(g.abs().sum()) for g in grads if g is not None)

    assert grad_norm("a") > 0 and grad_norm("c") > 0
    assert all(p.grad is None for p in model.heads["b"].parameters())
    assert model.encoder.conv1.weight.grad.abs().sum() > 0


def test_label_outside_branch_is_an_error():
    logits = _pad(torch.randn(1, 2, *SPATIAL), 4)
    labels = torch.zeros(1, 1, *SPATIAL)
    labels[0, 0, 0, 0, 0] = 3
    with pytest.raises(ValueError, match="sample 0 has label 3"):
        BranchMaskedDiceCELoss()(logits, labels)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        BranchMaskedDiceCELoss()(logits, labels + 4)
    with pytest.raises(ValueError, match="index labels"):
        BranchMaskedDiceCELoss()(logits, torch.zeros(1, 2, *SPATIAL))


def test_background_only_branch_scores_ce_only():
    torch.manual_seed(4)
    logits = torch.cat([_pad(torch.randn(1, 1, *SPATIAL), 3), torch.randn(1, 3, *SPATIAL)])
    labels = torch.cat([torch.zeros(1, 1, *SPATIAL), torch.randint(0, 3, (1, 1, *SPATIAL)).float()])
    dice_only = BranchMaskedDiceCELoss(lambda_ce=0.0)(logits, labels)
    expected = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_ce=0.0)(
        logits[1:], labels[1:]
    )
    assert dice_only.item() == pytest.approx(expected.item(), abs=1e-5)
