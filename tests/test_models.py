"""The networks: sizes, costs, state-dict names, and SKConv against an independent timm-style forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sk_deploy.models import SKConv, UnknownModelError, create_model, get_spec, list_models
from sk_deploy.models.profile import count_macs, count_params, network_size

# SKNET.md section 3 (timm's figures), in millions of parameters.
PARAMS_M = {
    "sknet50": 27.48,
    "skresnet18": 11.96,
    "skresnet34": 22.28,
    "seresnet50": 28.09,
    "seresnext50_32x4d": 27.56,
}

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics, so a wrong channel or branch shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean.data = torch.randn(n, generator=g) * 0.2
            m.running_var.data = torch.rand(n, generator=g) + 0.5


@pytest.mark.parametrize(("name", "millions"), PARAMS_M.items())
def test_parameter_counts_match_timm(name: str, millions: float) -> None:
    params = network_size(name, macs=False)[0] / 1e6  # on the meta device, as `sk-deploy models` counts them
    assert params == pytest.approx(millions, rel=1e-3), f"{name}: {params:.4f}M"


def test_sknet50_gmacs_at_224() -> None:
    model = create_model("sknet50")
    macs = count_macs(model, (3, 224, 224))
    assert 4.4 <= macs / 1e9 <= 4.6, macs
    # the meta device, which `sk-deploy models` counts on, gives the CPU's figures
    assert network_size("sknet50") == (count_params(model), macs)


def test_every_model_is_registered_with_input_size_and_preprocessing() -> None:
    assert list_models() == [
        "sknet26", "sknet50", "sknet101", "skresnet18", "skresnet34", "seresnet50", "seresnext50_32x4d",
    ]
    for name in list_models():
        spec = get_spec(name)
        assert spec.input_size == (3, 224, 224)
        assert (spec.preprocess.resize, spec.preprocess.crop, spec.preprocess.interpolation) == (256, 224, "bicubic")


@pytest.mark.parametrize("name", ["sknet26", "skresnet18", "seresnext50_32x4d"])
def test_forward_gives_logits_for_each_image(name: str) -> None:
    model = create_model(name)
    with torch.no_grad():
        out = model(torch.randn(3, 3, 96, 96))
    assert out.shape == (3, 1000)
    assert torch.isfinite(out).all()


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("sknet51")
    assert "sknet51" in str(info.value)
    assert all(name in str(info.value) for name in list_models())


# ---- SKConv against the timm-style forward (SKNET.md section 4), written independently with F.* ----


def _conv_bn_relu(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool = True) -> torch.Tensor:
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    return F.relu(y) if relu else y


def timm_style_sk_forward(sk: SKConv, x: torch.Tensor) -> torch.Tensor:
    """timm's SelectiveKernel forward on the module's weights: stack, sum, mean, fc_reduce, bn, ReLU,
    fc_select, view(B, M, C, 1, 1), softmax(1), (x * attn).sum(1)."""
    m = len(sk.paths)
    inputs = torch.split(x, x.shape[1] // m, 1) if sk.split_input else [x] * m
    paths = [_conv_bn_relu(xi, p.conv, p.bn) for xi, p in zip(inputs, sk.paths, strict=True)]
    stacked = torch.stack(paths, dim=1)
    attn = stacked.sum(1).mean((2, 3), keepdim=True)
    attn = _conv_bn_relu(attn, sk.attn.fc_reduce, sk.attn.bn)
    attn = F.conv2d(attn, sk.attn.fc_select.weight)
    b, c, h, w = attn.shape
    attn = torch.softmax(attn.view(b, m, c // m, h, w), dim=1)
    return (stacked * attn).sum(1)


@pytest.mark.parametrize(
    ("num_paths", "groups", "split_input", "stride", "in_ch", "out_ch"),
    [
        (2, 32, False, 1, 128, 128),  # SKNet bottleneck
        (2, 32, False, 2, 256, 256),  # strided
        (2, 1, True, 2, 64, 128),  # timm SK-ResNet basic block: input split across branches
        (3, 32, False, 1, 128, 128),  # M = 3: dilations 1, 2, 3
        (3, 1, True, 1, 96, 64),
    ],
)
def test_skconv_matches_timm_style_reference(num_paths, groups, split_input, stride, in_ch, out_ch) -> None:
    torch.manual_seed(0)
    sk = SKConv(in_ch, out_ch, stride=stride, num_paths=num_paths, groups=groups, split_input=split_input).eval()
    randomise_bn(sk)
    assert [p.conv.dilation for p in sk.paths] == [(d, d) for d in range(1, num_paths + 1)]
    x = torch.randn(2, in_ch, 20, 20)
    with torch.no_grad():
        ours, reference = sk(x), timm_style_sk_forward(sk, x)
    assert ours.shape == (2, out_ch, 20 // stride, 20 // stride)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # The attention must matter: the plain mean of the branches is a different answer.
    inputs = torch.split(x, in_ch // num_paths, 1) if split_input else [x] * num_paths
    with torch.no_grad():
        plain_mean = sum(p(xi) for p, xi in zip(sk.paths, inputs, strict=True)) / num_paths
    assert (ours - plain_mean).abs().max() > 1e-2


def test_fuse_width_follows_r_and_l() -> None:
    # d = max(C / r, L): 128/16 < 32 -> 32; 1024/16 = 64.
    assert SKConv(128, groups=32).attn.fc_reduce.out_channels == 32
    assert SKConv(1024, groups=32).attn.fc_reduce.out_channels == 64
    assert SKConv(1024, groups=32, rd_ratio=1 / 8, rd_divisor=16).attn.fc_reduce.out_channels == 128
    sk = SKConv(256, num_paths=3, groups=8, attn_channels=48)
    assert sk.attn.fc_reduce.weight.shape == (48, 256, 1, 1)
    assert sk.attn.fc_select.weight.shape == (3 * 256, 48, 1, 1)
    assert sk.paths[0].conv.groups == 8


def test_m_g_r_l_configurable_on_a_whole_network() -> None:
    model = create_model(
        "sknet26",
        block_args={"sk_kwargs": {"num_paths": 3, "rd_ratio": 1 / 8, "rd_divisor": 16, "split_input": False}},
    )
    sk = model.layer1[0].conv2
    assert len(sk.paths) == 3
    assert sk.attn.fc_reduce.out_channels == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


# ---- state-dict names: exactly timm's (SKNET.md section 4) ----


def _bn(prefix: str) -> set[str]:
    return {f"{prefix}.{k}" for k in BN_KEYS}


def _trunk_keys(layers: list[int], block_keys, downsample_first_block_of) -> set[str]:
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | _bn("bn1")
    for s, n in enumerate(layers, 1):
        for b in range(n):
            p = f"layer{s}.{b}"
            keys |= {f"{p}.{k}" for k in block_keys}
            if b == 0 and s in downsample_first_block_of:
                keys |= {f"{p}.downsample.0.weight"} | _bn(f"{p}.downsample.1")
    return keys


def _sk_keys(conv: str, paths: int = 2) -> set[str]:
    keys = {f"{conv}.attn.fc_reduce.weight", f"{conv}.attn.fc_select.weight"} | _bn(f"{conv}.attn.bn")
    for i in range(paths):
        keys |= {f"{conv}.paths.{i}.conv.weight"} | _bn(f"{conv}.paths.{i}.bn")
    return keys


def test_sknet50_state_dict_is_timm_skresnext50() -> None:
    block = {"conv1.conv.weight", "conv3.conv.weight"} | _bn("conv1.bn") | _bn("conv3.bn") | _sk_keys("conv2")
    model = create_model("sknet50")
    assert set(model.state_dict()) == _trunk_keys([3, 4, 6, 3], block, {1, 2, 3, 4})
    sd = model.state_dict()
    assert sd["layer1.0.conv2.attn.fc_reduce.weight"].shape == (32, 128, 1, 1)
    assert sd["layer1.0.conv2.attn.fc_select.weight"].shape == (2 * 128, 32, 1, 1)
    assert sd["layer4.0.conv2.attn.fc_reduce.weight"].shape == (64, 1024, 1, 1)
    assert sd["layer1.0.conv2.paths.1.conv.weight"].shape == (128, 4, 3, 3)  # 32 groups of 4 channels


@pytest.mark.parametrize(("name", "layers"), [("skresnet18", [2, 2, 2, 2]), ("skresnet34", [3, 4, 6, 3])])
def test_skresnet_state_dict_is_timm(name: str, layers: list[int]) -> None:
    block = {"conv2.conv.weight"} | _bn("conv2.bn") | _sk_keys("conv1")
    sd = create_model(name).state_dict()
    assert set(sd) == _trunk_keys(layers, block, {2, 3, 4})
    assert sd["layer1.0.conv1.paths.0.conv.weight"].shape == (64, 32, 3, 3)  # input split across 2 branches
    assert sd["layer1.0.conv1.attn.fc_reduce.weight"].shape == (16, 64, 1, 1)


@pytest.mark.parametrize("name", ["seresnet50", "seresnext50_32x4d"])
def test_seresnet_state_dict_is_timm(name: str) -> None:
    block = {f"conv{i}.weight" for i in (1, 2, 3)} | _bn("bn1") | _bn("bn2") | _bn("bn3")
    block |= {"se.fc1.weight", "se.fc1.bias", "se.fc2.weight", "se.fc2.bias"}
    sd = create_model(name).state_dict()
    assert set(sd) == _trunk_keys([3, 4, 6, 3], block, {1, 2, 3, 4})
    assert sd["layer1.0.se.fc1.weight"].shape == (16, 256, 1, 1)
