"""Tests for monai_ext.networks.multidomain: MedicalNet head, single-task segmenter, multi-domain segmenter."""

from __future__ import annotations

import warnings

import pytest
import torch

from monai_ext.networks.med3d import med3d_resnet10
from monai_ext.networks.multidomain import PAD_LOGIT, Med3DSegmenter, MedicalNetSegHead, MultiDomainSegmenter

DOMAINS = {"hippocampus": 3, "heart": 4, "spleen": 2}


@pytest.fixture(scope="module")
def multidomain() -> MultiDomainSegmenter:
    torch.manual_seed(0)
    return MultiDomainSegmenter(med3d_resnet10(), DOMAINS).eval()


def test_seg_head_layout_and_quarter_resolution():
    head = MedicalNetSegHead(512, 5)
    assert isinstance(head[0], torch.nn.ConvTranspose3d) and head[0].stride == (2, 2, 2) and head[0].bias is not None
    assert head[3].kernel_size == (3, 3, 3) and head[3].bias is None
    assert head[6].kernel_size == (1, 1, 1) and head[6].bias is None and head[6].out_channels == 5
    assert sorted({k.split(".")[0] for k in head.state_dict()}) == ["0", "1", "3", "4", "6"]
    encoder = med3d_resnet10().eval()
    with torch.no_grad():
        out = head.eval()(encoder(torch.randn(1, 1, 32, 32, 16)))
    assert out.shape == (1, 5, 8, 8, 4)  # 1/4 of the input with the dilated encoder


def test_segmenter_upsamples_to_input():
    model = Med3DSegmenter(med3d_resnet10(), n_classes=3).eval()
    x = torch.randn(2, 1, 24, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (2, 3, 24, 16, 16)
        model.upsample = False
        assert model(x).shape == (2, 3, 6, 4, 4)
    assert all(k.startswith(("encoder.", "head.")) for k in model.state_dict())


def test_segmenter_without_depth_striding():
    model = Med3DSegmenter(med3d_resnet10(stride_depth=False), n_classes=2, upsample=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 32, 32)).shape == (1, 2, 3, 8, 8)


def test_multidomain_attributes_and_keys(multidomain):
    assert multidomain.domain_names == ("hippocampus", "heart", "spleen")
    assert multidomain.class_counts == (3, 4, 2) and multidomain.max_classes == 4
    assert multidomain.default_domain == "hippocampus"
    keys = multidomain.state_dict()
    assert "heads.heart.6.weight" in keys and tuple(keys["heads.heart.6.weight"].shape[:2]) == (4, 32)
    assert "encoder.layer4.0.conv1.weight" in keys
    same = MultiDomainSegmenter(med3d_resnet10(), list(DOMAINS.items()))
    assert same.domain_names == multidomain.domain_names and same.class_counts == multidomain.class_counts


def test_single_domain_returns_unpadded_branch(multidomain):
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        by_name = multidomain(x, "heart")
        by_index = multidomain(x, 1)
        by_tensor = multidomain(x, torch.tensor(1))
        default = multidomain(x)
    assert by_name.shape == (2, 4, 16, 16, 16)
    assert torch.equal(by_name, by_index) and torch.equal(by_name, by_tensor)
    assert default.shape == (2, 3, 16, 16, 16)


def test_mixed_batch_decodes_each_sample_with_its_own_branch(multidomain):
    torch.manual_seed(1)
    x = torch.randn(4, 1, 16, 16, 16)
    domain = torch.tensor([2, 0, 2, 1])
    with torch.no_grad():
        out = multidomain(x, domain)
        as_names = multidomain(x, ["spleen", "hippocampus", "spleen", "heart"])
    assert out.shape == (4, 4, 16, 16, 16)
    assert torch.equal(out, as_names)
    for i, d in enumerate(domain.tolist()):
        n = multidomain.class_counts[d]
        with torch.no_grad():
            alone = multidomain(x[i : i + 1], d)
        assert torch.allclose(out[i, :n], alone[0], atol=1e-5)
        assert torch.all(out[i, n:] == PAD_LOGIT)
        assert not torch.any(out[i, :n] == PAD_LOGIT)


def test_one_domain_tensor_is_still_padded(multidomain):
    with torch.no_grad():
        out = multidomain(torch.randn(2, 1, 16, 16, 16), torch.tensor([2, 2]))
    assert out.shape[1] == 4 and torch.all(out[:, 2:] == PAD_LOGIT)


def test_absent_branches_get_no_gradient():
    model = MultiDomainSegmenter(med3d_resnet10(), DOMAINS, head_type="conv1x1").train()
    out = model(torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1]))
    out[out != PAD_LOGIT].sum().backward()
    assert model.heads["hippocampus"].weight.grad.abs().sum() > 0
    assert model.heads["heart"].weight.grad.abs().sum() > 0
    assert model.heads["spleen"].weight.grad is None
    assert model.encoder.conv1.weight.grad.abs().sum() > 0


def test_invalid_domains(multidomain):
    x = torch.randn(2, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="unknown domain"):
        multidomain(x, "liver")
    with pytest.raises(ValueError, match="out of range"):
        multidomain(x, 3)
    with pytest.raises(ValueError, match="batch of 2"):
        multidomain(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        multidomain(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="default_domain"):
        MultiDomainSegmenter(med3d_resnet10(), DOMAINS, default_domain="liver")
    with pytest.raises(ValueError, match="unique"):
        MultiDomainSegmenter(med3d_resnet10(), [("a", 2), ("a", 3)])
    with pytest.raises(ValueError, match="'.'"):
        MultiDomainSegmenter(med3d_resnet10(), {"a.b": 2})
    with pytest.raises(ValueError, match="head_type"):
        MultiDomainSegmenter(med3d_resnet10(), DOMAINS, head_type="mlp")


def test_trace_with_image_only():
    model = MultiDomainSegmenter(med3d_resnet10(), DOMAINS, default_domain="heart").eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        expected = model(x)
        got = traced(x)
    assert got.shape == (1, 4, 16, 16, 16)
    assert torch.allclose(got, expected, atol=1e-5)
    other = torch.randn(2, 1, 24, 16, 8)  # the trace follows the input size
    with torch.no_grad():
        assert torch.allclose(traced(other), model(other), atol=1e-5)


def test_single_domain_index_broadcasts_over_sliding_window_batches():
    from monai.inferers import SlidingWindowInferer

    from monai_ext.networks.med3d import med3d_resnet
    from monai_ext.networks.multidomain import MultiDomainSegmenter

    torch.manual_seed(0)
    net = MultiDomainSegmenter(med3d_resnet(10), [("a", 3), ("b", 2)]).eval()
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        windows = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=4)(x, net, domain=torch.tensor([1]))
        whole = net(torch.randn(4, 1, 16, 16, 16), domain=torch.tensor([1]))
    assert windows.shape == (1, 3, 24, 24, 24) and whole.shape[0] == 4
    assert torch.all(windows[:, 2] == -1e4)  # dataset b has 2 classes: the third channel is padding
    with pytest.raises(ValueError, match="domain indices"):
        net(torch.randn(3, 1, 16, 16, 16), domain=torch.tensor([0, 1]))
