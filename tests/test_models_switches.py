"""Each switch of a model spec changes what it says, and nothing it does not say."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from gradlab.models import build_model, describe_model, native_input_size
from gradlab.models.build import build_meta
from gradlab.models.layers import ACTIVATIONS, ZeroPadShortcut

ACT_TYPES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
             "leaky_relu": nn.LeakyReLU, "identity": nn.Identity}
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- act --------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("name,positions", [("resnet20", 1 + 2 * 9), ("plain50", 1 + 3 * 16), ("mlp6", 5)])
def test_act_puts_that_activation_at_every_position(act, name, positions):
    model = build_meta(f"{name}:act={act}")
    acts = [m for m in model.modules() if type(m) in ACT_TYPES.values()]
    assert len(acts) == positions
    assert all(type(m) is ACT_TYPES[act] for m in acts)
    assert len({id(m) for m in acts}) == positions  # one module per position, none shared


def test_act_sigmoid_leaves_no_relu_and_sigmoid_is_applied():
    model = build_model("plain20:act=sigmoid")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    block = model.layer1[0]
    x = torch.randn(2, 16, 8, 8)
    h = torch.sigmoid(block.bn1(block.conv1(x)))
    torch.testing.assert_close(block(x), torch.sigmoid(block.bn2(block.conv2(h))))


def test_linear_activation_without_norm_makes_a_linear_network():
    torch.manual_seed(0)
    model = build_model("plain20:act=linear,norm=none")
    x = torch.randn(2, 3, 32, 32)
    zero = model(torch.zeros_like(x))
    torch.testing.assert_close(model(3 * x) - zero, 3 * (model(x) - zero), rtol=1e-4, atol=1e-5)


# -- norm -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "plain34", "resnet20", "plain56", "mlp10"])
def test_norm_none_removes_every_norm_layer_and_adds_biases(name):
    with_norm = build_meta(name)
    without = build_meta(f"{name}:norm=none")
    assert not any(isinstance(m, NORM_TYPES) for m in without.modules())
    assert all(m.bias is not None for m in _weighted(without))
    assert all(m.bias is None for m in _weighted(with_norm) if m is not with_norm.fc)
    norm_params = sum(_params(m) for m in with_norm.modules() if isinstance(m, NORM_TYPES))
    biases = sum(m.weight.shape[0] for m in _weighted(without) if m is not without.fc)
    assert _params(without) == _params(with_norm) - norm_params + biases


def test_norm_layers_start_at_one_and_zero():
    model = build_model("resnet20:init=orthogonal")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


# -- init -------------------------------------------------------------------------------------
def _fans(w: torch.Tensor) -> tuple[int, int]:
    receptive = w[0][0].numel()
    return w.shape[1] * receptive, w.shape[0] * receptive


def test_default_init_is_what_fresh_layers_give_under_the_same_seed():
    torch.manual_seed(123)
    model = build_model("resnet20:norm=none")
    torch.manual_seed(123)
    for m in _weighted(model):  # registration order is construction order
        if isinstance(m, nn.Conv2d):
            fresh = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=True)
        else:
            fresh = nn.Linear(m.in_features, m.out_features)
        assert torch.equal(m.weight, fresh.weight) and torch.equal(m.bias, fresh.bias)


def test_default_init_of_an_mlp_equals_a_hand_built_sequential():
    torch.manual_seed(7)
    model = build_model("mlp4:width=32,act=tanh,norm=none")
    torch.manual_seed(7)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                              nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("scheme,fan_index,kind", [
    ("kaiming_normal_fan_in", 0, "normal"), ("kaiming_normal_fan_out", 1, "normal"),
    ("kaiming_uniform_fan_in", 0, "uniform"), ("kaiming_uniform_fan_out", 1, "uniform"),
])
def test_kaiming_std_is_sqrt_two_over_fan(scheme, fan_index, kind):
    torch.manual_seed(0)
    model = build_model(f"resnet18:init={scheme}")
    for w in (model.layer4[1].conv2.weight, model.layer3[0].conv1.weight):
        std = math.sqrt(2 / _fans(w)[fan_index])
        assert w.std().item() == pytest.approx(std, rel=0.02)
        if kind == "uniform":
            assert w.abs().max().item() <= math.sqrt(3) * std + 1e-6
    assert torch.all(model.fc.bias == 0)


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal"])
def test_xavier_std(scheme):
    torch.manual_seed(0)
    w = build_model(f"resnet18:init={scheme}").layer4[1].conv2.weight
    fan_in, fan_out = _fans(w)
    assert w.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)


def test_init_orthogonal_gives_orthogonal_matrices():
    torch.manual_seed(0)
    model = build_model("resnet20:init=orthogonal,norm=none")
    for m in _weighted(model):
        w = m.weight.reshape(m.weight.shape[0], -1)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-4, rtol=0)
        assert torch.all(m.bias == 0)


def test_init_normal_std():
    torch.manual_seed(0)
    model = build_model("mlp3:init=normal:0.05,norm=none")
    w = model.layers[0].linear.weight
    assert w.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(w.mean().item()) < 0.001
    assert torch.all(model.layers[0].linear.bias == 0)


def test_zero_init_residual_makes_every_block_its_shortcut():
    torch.manual_seed(0)
    model = build_model("resnet20:zero_init_residual=true")
    for block in model.blocks():
        assert torch.all(block.bn2.weight == 0)
    block = model.layer2[0]  # a block with a zero-padding shortcut
    x = torch.relu(torch.randn(2, 16, 8, 8))
    torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))
    plain = build_model("resnet50:zero_init_residual=true,width=8")
    assert all(torch.all(b.bn3.weight == 0) and torch.all(b.bn2.weight == 1) for b in plain.blocks())


# -- shortcut, width, stem, channels, classes -------------------------------------------------
def test_shortcut_zeropad_on_imagenet_nets_drops_the_projections():
    projection = build_meta("resnet34")
    zeropad = build_meta("resnet34:shortcut=zeropad")
    proj_params = sum(_params(m) for n, m in projection.named_modules() if n.endswith("downsample"))
    assert _params(zeropad) == _params(projection) - proj_params == 21_623_848 == _params(build_meta("plain34"))
    assert isinstance(zeropad.layer2[0].downsample, ZeroPadShortcut)
    x = torch.randn(1, 64, 10, 10)
    block = build_model("resnet34:shortcut=zeropad").layer2[0]
    torch.testing.assert_close(block.downsample(x), torch.cat([x[:, :, ::2, ::2], torch.zeros(1, 64, 5, 5)], 1))


def test_shortcut_projection_on_cifar_nets_adds_the_projections():
    model = build_meta("resnet20:shortcut=projection")
    # 1x1 16->32 and 32->64 convolutions with their BatchNorm (gamma, beta)
    assert _params(model) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert isinstance(model.layer2[0].downsample[0], nn.Conv2d)


def test_width_scales_every_stage():
    model = build_meta("resnet20:width=32")
    assert model.conv1.out_channels == 32 and model.layer3[0].conv1.out_channels == 128
    assert model.fc.in_features == 128
    assert build_meta("resnet50:width=16").fc.in_features == 16 * 8 * 4
    mlp = build_meta("mlp3:width=100")
    assert _params(mlp) == (3072 * 100 + 200) + (100 * 100 + 200) + (100 * 10 + 10)


def test_stem_cifar_and_imagenet():
    model = build_meta("resnet18:stem=cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.maxpool is None
    assert native_input_size("resnet18:stem=cifar") == (3, 32, 32)
    assert describe_model("resnet18:stem=cifar")["layers"][-3]["output_shape"][1:] == [4, 4]
    big = build_meta("resnet20:stem=imagenet")
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, nn.MaxPool2d)
    assert native_input_size("resnet20:stem=imagenet") == (3, 224, 224)


def test_in_channels_and_classes_from_spec_or_arguments():
    assert build_meta("resnet18:in_channels=1,classes=5").conv1.in_channels == 1
    model = build_model("resnet20", num_classes=100, in_channels=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 100
    assert build_model("resnet20:classes=100", num_classes=100).fc.out_features == 100
    assert build_meta("mlp2:in_ch=1,size=28").layers[0].linear.in_features == 784
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)


def test_torchvision_models():
    torch.manual_seed(0)
    model = build_model("tv:resnet18", num_classes=10)
    assert _params(model) == _params(torchvision.models.resnet18(num_classes=10))
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert describe_model("tv:mobilenet_v3_small")["family"] == "torchvision"
    assert native_input_size("tv:inception_v3") == (3, 299, 299)
    model = build_model("tv:googlenet:classes=5")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)  # no auxiliary outputs in training mode
