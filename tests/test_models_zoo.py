"""The zoo's architectures against independent references: torchvision, the papers' counts,
hand-computed multiply-adds and a functional re-implementation of the CIFAR nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gradlab.models import build_model, count_macs, describe_model, list_models, native_input_size
from gradlab.models.build import build_meta
from gradlab.models.layers import ZeroPadShortcut
from gradlab.models.resnet import BasicBlock, Bottleneck

IMAGENET = {  # torchvision's parameter counts (1000 classes); ResNet paper's GMACs at 224x224
    "resnet18": (11_689_512, 1.8),
    "resnet34": (21_797_672, 3.6),
    "resnet50": (25_557_032, 3.8),
    "resnet101": (44_549_160, 7.6),
    "resnet152": (60_192_808, 11.3),
}
CIFAR = {"20": 269_722, "32": 464_154, "44": 658_586, "56": 853_018, "110": 1_727_962}
CONV_NETS = [n for n in list_models() if not n.startswith("mlp")]


def describe_model_family(name: str) -> str:
    from gradlab.models import parse_spec

    return parse_spec(name).family


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_paper_network():
    names = set(list_models())
    for depth in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110):
        assert {f"resnet{depth}", f"plain{depth}"} <= names
    assert {"mlp10", "mlp30"} <= names


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnets_match_torchvision(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    model = build_meta(name)
    assert _params(model) == IMAGENET[name][0] == _params(reference)
    # Same parameter and buffer names and shapes: torchvision checkpoints load unchanged.
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnet_computes_what_torchvision_computes(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(num_classes=7)
    model = build_model(name, num_classes=7)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for mode in ("train", "eval"):
        reference.train(mode == "train")
        model.train(mode == "train")
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_macs_within_ten_percent_of_the_paper(name):
    macs = count_macs(build_meta(name), (3, 224, 224))
    paper = IMAGENET[name][1] * 1e9
    assert abs(macs - paper) / paper < 0.10


@pytest.mark.parametrize("depth", CIFAR)
def test_cifar_counts_and_plain_twins(depth):
    assert _params(build_meta(f"resnet{depth}")) == CIFAR[depth]
    assert _params(build_meta(f"plain{depth}")) == CIFAR[depth]


def _cifar_macs_by_hand(n: int, classes: int = 10) -> int:
    """3x3 convolutions on 32/16/8 maps with 16/32/64 filters, then a linear layer."""
    total = 32 * 32 * 16 * 3 * 9
    for stage, (width, side) in enumerate([(16, 32), (32, 16), (64, 8)]):
        first_in = 16 if stage == 0 else width // 2
        total += side * side * width * first_in * 9 + (2 * n - 1) * side * side * width * width * 9
    return total + 64 * classes


@pytest.mark.parametrize("depth", CIFAR)
def test_cifar_macs_by_hand(depth):
    n = (int(depth) - 2) // 6
    assert count_macs(build_meta(f"resnet{depth}"), (3, 32, 32)) == _cifar_macs_by_hand(n)
    assert describe_model(f"plain{depth}")["macs"] == _cifar_macs_by_hand(n)


def test_count_macs_of_single_layers_by_hand():
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    assert count_macs(nn.Conv2d(4, 8, 3, stride=2, groups=2), (4, 9, 9)) == 8 * 4 * 4 * 2 * 9
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2)) == 60


def test_teaching_text_block_arithmetic():
    def conv_weights(block):
        return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))

    assert conv_weights(BasicBlock(256, 256)) == 3 * 3 * 256 * 256 * 2 == 1_179_648
    assert conv_weights(Bottleneck(256, 64)) == 256 * 64 + 9 * 64 * 64 + 64 * 256 == 69_632


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_at_native_and_other_sizes(name):
    classes = 7
    model = build_meta(name, num_classes=classes).eval()  # eval: meta BatchNorm is quicker
    native = native_input_size(name)
    assert model(torch.zeros(2, *native, device="meta")).shape == (2, classes)
    if not name.startswith("mlp"):
        for side in (native[1] // 2 + 1, native[1] + 8):
            assert model(torch.zeros(2, 3, side, side, device="meta")).shape == (2, classes)


def test_mlp_takes_other_sizes_through_options():
    model = build_model("mlp5:size=28,in_channels=1,width=16", num_classes=10)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert native_input_size("mlp5:size=28,in_channels=1") == (1, 28, 28)


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    spec = f"{name}:width=8" if describe_model_family(name) == "imagenet" else name
    model = build_model(spec, num_classes=3)
    x = torch.randn(4, 3, 32, 32)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def _input_gradient_with_block_zeroed(spec: str, block_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(spec, num_classes=3)
    block = model.blocks()[block_index]
    with torch.no_grad():  # silence the residual branch only; a projection shortcut stays
        for name, m in block.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("downsample"):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    out.sum().backward()
    return x.grad, out


PAIRS = [(f"plain{n[6:]}", n) for n in CONV_NETS if n.startswith("resnet")]


@pytest.mark.parametrize("plain,residual", PAIRS)
def test_plain_net_has_no_path_around_a_block(plain, residual):
    """Silence one block's convolutions: in a plain net nothing of the input gets past it (the
    input gradient is exactly 0 and all samples give the same output); in the residual twin the
    shortcut still carries it."""
    suffix = ":width=8" if describe_model_family(plain) == "imagenet" else ""
    n_blocks = len(build_meta(plain + suffix).blocks())
    small = plain in ("plain18", "plain20")
    indices = range(n_blocks) if small else sorted({0, n_blocks // 2, n_blocks - 1})
    for i in indices:
        grad, out = _input_gradient_with_block_zeroed(plain + suffix, i)
        assert torch.count_nonzero(grad) == 0, (plain, i)
        torch.testing.assert_close(out[0], out[1])
        grad, out = _input_gradient_with_block_zeroed(residual + suffix, i)
        assert torch.count_nonzero(grad) > 0, (residual, i)


def test_plain_and_residual_twins_share_module_names():
    for plain, residual in PAIRS:
        p = {n for n, _ in build_meta(plain).named_modules()}
        r = {n for n, _ in build_meta(residual).named_modules()}
        assert p <= r and all(".downsample" in n for n in r - p), (plain, sorted(r - p)[:3])


def _reference_cifar_forward(state: dict[str, torch.Tensor], x: torch.Tensor, n: int, residual: bool) -> torch.Tensor:
    """The paper's 6n+2 net written out with functional ops from the state dict alone."""

    def bn(h, prefix):
        return F.batch_norm(h, None, None, state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=True)

    h = F.relu(bn(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"))
    for stage in range(3):
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if (stage > 0 and b == 0) else 1
            out = F.relu(bn(F.conv2d(h, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if residual:
                short = h[:, :, ::stride, ::stride]
                short = torch.cat([short, torch.zeros_like(short)], 1) if stride == 2 else short
                out = out + short
            h = F.relu(out)
    return F.linear(h.mean((2, 3)), state["fc.weight"], state["fc.bias"])


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet32"])
def test_cifar_net_computes_the_papers_architecture(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(3, 3, 32, 32)
    n = (int(name[-2:]) - 2) // 6
    expected = _reference_cifar_forward(model.state_dict(), x, n, name.startswith("resnet"))
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_zero_pad_shortcut_by_hand():
    x = torch.randn(2, 4, 5, 5)
    out = ZeroPadShortcut(4, 10, 2)(x)
    assert out.shape == (2, 10, 3, 3)
    torch.testing.assert_close(out[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 4:]) == 0


def test_describe_model_fields():
    info = describe_model("resnet34")
    assert info["params"] == 21_797_672 and info["depth"] == 34 and info["family"] == "imagenet"
    assert info["input_size"] == [3, 224, 224] and info["paper_gmacs"] == 3.6
    assert info["layers"][0]["name"] == "conv1" and info["layers"][-1]["name"] == "fc"
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]
    assert describe_model("resnet56")["depth"] == 56 and describe_model("mlp10")["depth"] == 10
    assert describe_model("resnet20", num_classes=100)["classes"] == 100


def test_build_model_is_reachable_from_the_package():
    import gradlab

    assert _params(gradlab.build_model("resnet20")) == CIFAR["20"]
