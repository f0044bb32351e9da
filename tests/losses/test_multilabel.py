"""Tests of monai_ext.losses.multilabel."""

import math

import pytest
import torch
from monai.data import MetaTensor

from monai_ext.losses.multilabel import PresentClassDiceBCELoss


def test_hand_computed_value():
    # logits 0 -> p = 0.5 everywhere; class 0 present on 2 of 4 voxels, class 1 absent
    logits = torch.zeros(1, 2, 4)
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    loss = PresentClassDiceBCELoss()
    # Dice of class 0: 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4; class 1 not present -> not averaged
    assert loss.dice_term(logits, target).item() == pytest.approx(0.4)
    assert loss.bce_term(logits, target).item() == pytest.approx(math.log(2.0))
    assert loss(logits, target).item() == pytest.approx(0.4 + math.log(2.0))
    weighted = PresentClassDiceBCELoss(lambda_dice=2.0, lambda_bce=0.5)
    assert weighted(logits, target).item() == pytest.approx(0.8 + 0.5 * math.log(2.0))


def test_matches_per_sample_per_class_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = (torch.rand(2, 3, 5, 6) > 0.7).float()
    target[0, 1] = 0  # class 1 absent in sample 0 only
    target[1, 2] = 0  # class 2 absent in sample 1 only
    dices = []
    for b in range(2):
        for c in range(3):
            t = target[b, c]
            if t.sum() == 0:
                continue
            p = torch.sigmoid(logits[b, c])
            dices.append(1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    expected = torch.stack(dices).mean() + bce
    assert len(dices) == 4
    assert PresentClassDiceBCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_no_class_present_gives_zero_dice_and_bce_still_trains():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 3, 4, 4)
    loss_fn = PresentClassDiceBCELoss()
    assert loss_fn.dice_term(logits, target).item() == 0.0
    loss = loss_fn(logits, target)
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert loss.item() == pytest.approx(expected_bce.item())
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_unknown_channel_is_ignored_and_gets_no_gradient():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    known = (torch.rand(1, 2, 4, 4) > 0.5).float()
    target = torch.cat([known[:, :1], torch.full((1, 1, 4, 4), -1.0), known[:, 1:]], dim=1)
    loss = PresentClassDiceBCELoss()(logits, target)
    loss.backward()
    assert torch.all(logits.grad[:, 1] == 0)
    assert logits.grad[:, 0].abs().sum() > 0 and logits.grad[:, 2].abs().sum() > 0
    # same value as the loss on the two annotated channels alone
    reference = PresentClassDiceBCELoss()(logits.detach()[:, [0, 2]], known)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_unknown_voxels_and_custom_unknown_value():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    target = torch.tensor([[[1.0, 0.0, 255.0, 255.0]]])
    loss = PresentClassDiceBCELoss(unknown_value=255)(logits, target)
    # over the 2 known voxels: Dice 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3, BCE ln 2
    assert loss.item() == pytest.approx(1 / 3 + math.log(2.0))
    loss.backward()
    assert torch.all(logits.grad[0, 0, 2:] == 0)


def test_all_unknown_gives_zero_and_metatensor_inputs_work():
    logits = MetaTensor(torch.randn(1, 2, 3, 3))
    target = MetaTensor(torch.full((1, 2, 3, 3), -1.0))
    loss = PresentClassDiceBCELoss()(logits, target)
    assert loss.item() == 0.0 and not isinstance(loss, MetaTensor)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="same shape"):
        PresentClassDiceBCELoss()(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="reduction"):
        PresentClassDiceBCELoss(reduction="none")
    with pytest.raises(ValueError, match="lambda"):
        PresentClassDiceBCELoss(lambda_dice=-1.0)
