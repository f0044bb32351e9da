"""Tests of monai_ext.networks.genesis_unet."""

import pytest
import torch

from monai_ext.networks.genesis_unet import BatchStatsBatchNorm3d, GenesisUNet3D


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("out_channels, expected", [(25, 19_075_225), (32, 19_075_680), (1, 19_073_665)])
def test_parameter_count(out_channels, expected):
    with torch.device("meta"):
        model = GenesisUNet3D(out_channels=out_channels)
    assert _n_params(model) == expected


def test_published_19_08m_holds_for_suprem_class_counts():
    # 19.08M (two decimals) for the 25 AbdomenAtlas / 32 SuPreM classes, not for a single output channel
    for out_channels in (25, 32):
        with torch.device("meta"):
            assert round(_n_params(GenesisUNet3D(out_channels=out_channels)) / 1e6, 2) == 19.08
    with torch.device("meta"):
        assert round(_n_params(GenesisUNet3D(out_channels=1)) / 1e6, 2) == 19.07


def test_checkpoint_key_names_and_shapes():
    with torch.device("meta"):
        state = GenesisUNet3D(out_channels=32).state_dict()
    expected = {
        "down_tr64.ops.0.conv1.weight": (32, 1, 3, 3, 3),
        "down_tr64.ops.1.conv1.weight": (64, 32, 3, 3, 3),
        "down_tr64.ops.0.bn1.running_var": (32,),
        "down_tr128.ops.0.conv1.weight": (64, 64, 3, 3, 3),
        "down_tr128.ops.1.conv1.weight": (128, 64, 3, 3, 3),
        "down_tr256.ops.1.conv1.weight": (256, 128, 3, 3, 3),
        "down_tr512.ops.0.conv1.weight": (256, 256, 3, 3, 3),
        "down_tr512.ops.1.conv1.weight": (512, 256, 3, 3, 3),
        "up_tr256.up_conv.weight": (512, 512, 2, 2, 2),
        "up_tr256.ops.0.conv1.weight": (256, 768, 3, 3, 3),
        "up_tr256.ops.1.conv1.weight": (256, 256, 3, 3, 3),
        "up_tr128.up_conv.weight": (256, 256, 2, 2, 2),
        "up_tr128.ops.0.conv1.weight": (128, 384, 3, 3, 3),
        "up_tr64.up_conv.weight": (128, 128, 2, 2, 2),
        "up_tr64.ops.0.conv1.weight": (64, 192, 3, 3, 3),
        "up_tr64.ops.1.bn1.num_batches_tracked": (),
        "out_tr.final_conv.weight": (32, 64, 1, 1, 1),
        "out_tr.final_conv.bias": (32,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    # 4 encoder + 3 decoder levels x 2 blocks x (conv w, b + bn w, b, mean, var, count) + 3 up_conv x 2 + head x 2
    assert len(state) == 14 * 7 + 3 * 2 + 2


def test_forward_shape_and_gradient():
    model = GenesisUNet3D(in_channels=2, out_channels=3)
    x = torch.randn(2, 2, 16, 16, 16)
    y = model(x)
    assert y.shape == (2, 3, 16, 16, 16)
    y.mean().backward()
    assert model.down_tr64.ops[0].conv1.weight.grad is not None
    deepest, last = model.forward_features(x)
    assert deepest.shape == (2, 512, 2, 2, 2) and last.shape == (2, 64, 16, 16, 16)


def test_batch_statistics_in_eval_by_default():
    torch.manual_seed(0)
    model = GenesisUNet3D(out_channels=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BatchStatsBatchNorm3d):
                module.running_mean.fill_(5.0)  # would change the output if running statistics were used
    model.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        eval_out = model(x)
        running_before = model.down_tr64.ops[0].bn1.running_mean.clone()
        # eval output depends on the batch: the first sample alone gives a different result
        single = model(x[:1])
        model.train()
        train_out = model(x)
    assert torch.allclose(eval_out, train_out, atol=1e-5)
    assert not torch.allclose(single, eval_out[:1], atol=1e-4)
    assert torch.equal(running_before, torch.full_like(running_before, 5.0))  # eval passes leave the stats alone


def test_running_statistics_when_disabled():
    model = GenesisUNet3D(out_channels=2, bn_batch_stats_in_eval=False).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        batch = model(x)[:1]
        single = model(x[:1])
    assert torch.allclose(batch, single, atol=1e-5)  # eval output no longer depends on the batch
    model.set_bn_batch_stats_in_eval(True)
    assert all(m.batch_stats_in_eval for m in model.modules() if isinstance(m, BatchStatsBatchNorm3d))


def test_prelu_has_per_channel_slopes_and_bad_activation_fails():
    with torch.device("meta"):
        model = GenesisUNet3D(out_channels=1, act="prelu")
    assert tuple(model.state_dict()["down_tr64.ops.0.activation.weight"].shape) == (32,)
    with pytest.raises(ValueError, match="unknown activation"):
        GenesisUNet3D(act="no_such_act")
