"""Fine-tuning helpers: freezing keeps pre-trained normalisation statistics, per-layer learning rates, histories."""

import torch

from monai_ext.engines.finetune import (
    ValidationHistoryWriter,
    freeze_except,
    load_network_spec,
    read_validation_history,
    save_network_spec,
    trainable_parameter_groups,
)
from monai_ext.networks.transfer import build_network_from_spec, build_transfer_network, new_layer_prefixes


def test_frozen_encoder_keeps_statistics_while_training():
    net = build_transfer_network("med3d-resnet10", "segmentation", 3)
    new = new_layer_prefixes("med3d-resnet10", "segmentation")
    freeze_except(net, new)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    optimiser = torch.optim.SGD(trainable_parameter_groups(net, new, 0.1), lr=0.1)
    loss = net(torch.randn(2, 1, 16, 32, 32)).square().mean()
    loss.backward()
    optimiser.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    assert not net.encoder.bn1.training and net.head.training


def test_parameter_groups_scale_new_layers():
    net = build_transfer_network("med3d-resnet10", "classification", 2)
    groups = trainable_parameter_groups(net, ("fc.",), 1e-4, 100.0)
    assert [g["name"] for g in groups] == ["pretrained", "new"]
    assert groups[1]["lr"] == 1e-2 and len(groups[1]["params"]) == 2


def test_validation_history_and_network_spec(tmp_path):
    from types import SimpleNamespace

    writer = ValidationHistoryWriter(tmp_path / "h.csv", iterations_per_epoch=5)
    for epoch, score in ((0, 0.1), (2, 0.4), (2, 0.45)):
        writer(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_mean_dice": score})))
    rows = read_validation_history(tmp_path / "h.csv")
    assert [(r["iteration"], r["val_mean_dice"]) for r in rows] == [(0, 0.1), (10, 0.45)]
    spec = {"architecture": "suprem-segresnet", "task": "segmentation", "in_channels": 1,
            "class_names": ["background", "a"], "kwargs": {}}  # fmt: skip
    save_network_spec(spec, tmp_path)
    net = build_network_from_spec(load_network_spec(tmp_path))
    assert net.conv_final[2].conv.out_channels == 2
