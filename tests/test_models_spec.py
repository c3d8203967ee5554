"""Spec strings: canonical forms, aliases, and one-line refusals that name the valid values."""

from __future__ import annotations

import pytest

from gradlab.errors import GradlabError
from gradlab.models import build_model, list_models, parse_spec
from gradlab.models.registry import ZooEntry, register


@pytest.mark.parametrize("text,canonical", [
    ("resnet34", "resnet34"),
    ("ResNet34:norm=bn,act=relu", "resnet34"),  # defaults dropped, aliases resolved
    (" plain34 : norm=none , act=sigmoid ", "plain34:act=sigmoid,norm=none"),  # fixed order
    ("resnet20:init=he,zero_init_residual=yes", "resnet20:init=kaiming_normal_fan_in,zero_init_residual=true"),
    ("resnet20:init=kaiming_uniform", "resnet20:init=kaiming_uniform_fan_in"),
    ("resnet20:init=glorot", "resnet20:init=xavier_uniform"),
    ("resnet20:init=normal:1e-2", "resnet20:init=normal:0.01"),
    ("mlp30:width=64,act=linear", "mlp30:act=identity,width=64"),
    ("resnet18:in_ch=1,num_classes=5", "resnet18:in_channels=1,classes=5"),
    ("resnet34:shortcut=a", "resnet34:shortcut=zeropad"),
    ("resnet20:shortcut=b,stem=imagenet", "resnet20:shortcut=projection,stem=imagenet"),
    ("tv:resnet50:classes=10", "tv:resnet50:classes=10"),
])
def test_canonical_form(text, canonical):
    spec = parse_spec(text)
    assert str(spec) == canonical
    assert str(parse_spec(str(spec))) == canonical  # round trip
    assert str(parse_spec(spec)) == canonical


def test_spec_fields():
    spec = parse_spec("plain34:act=sigmoid,norm=none")
    assert (spec.name, spec.options, spec.family) == ("plain34", {"act": "sigmoid", "norm": "none"}, "imagenet")
    assert spec.resolved()["width"] == 64 and spec.resolved()["act"] == "sigmoid"
    assert parse_spec("resnet56").family == "cifar" and parse_spec("mlp7").family == "mlp"


@pytest.mark.parametrize("text,pattern", [
    ("", r"empty model spec"),
    ("resnet35", r"unknown model 'resnet35': did you mean .*resnet34"),
    ("plian34", r"did you mean plain34"),
    ("mlp0", r"at least one layer"),
    ("tv:resnt50", r"did you mean tv:resnet50"),
    ("resnet18:act", r"not key=value"),
    ("resnet18:act=relu,", r"not key=value"),
    ("resnet18:act=swish", r"act=swish is not valid: choose one of relu, sigmoid, tanh, gelu, leaky_relu, identity"),
    ("resnet18:norm=layer", r"choose one of batch, none"),
    ("resnet18:init=kaiming_fan", r"choose one of default, xavier_uniform, .*orthogonal or normal:STD"),
    ("resnet18:init=normal", r"needs a standard deviation"),
    ("resnet18:init=normal:-1", r"positive"),
    ("resnet18:init=normal:abc", r"must be a number"),
    ("resnet18:shortcut=dense", r"choose one of projection, zeropad"),
    ("resnet18:stem=tiny", r"choose one of imagenet, cifar"),
    ("resnet18:width=0", r"positive integer"),
    ("resnet18:width=1.5", r"positive integer"),
    ("resnet18:classes=-3", r"positive integer"),
    ("resnet18:zero_init_residual=maybe", r"choose true or false"),
    ("resnet34:acts=relu", r"unknown option 'acts' \(did you mean act\?\)"),
    ("resnet18:act=relu,act=tanh", r"given twice"),
    ("plain34:shortcut=zeropad", r"plain34 has no shortcuts.*use resnet34"),
    ("plain20:zero_init_residual=true", r"plain20 has no shortcuts.*use resnet20"),
    ("resnet20:norm=none,zero_init_residual=true", r"needs norm=batch"),
    ("mlp10:stem=cifar", r"stem does not apply to mlp10"),
    ("mlp10:shortcut=zeropad", r"shortcut does not apply to mlp10"),
    ("resnet20:size=28", r"size does not apply to resnet20"),
    ("tv:resnet50:act=relu", r"act does not apply to tv:resnet50: its options are classes"),
])
def test_bad_specs_give_one_line_errors(text, pattern):
    with pytest.raises(GradlabError, match=pattern) as info:
        parse_spec(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args,pattern", [
    (("resnet18:classes=5", 10, None), r"says classes=5 but num_classes=10"),
    (("resnet18:in_channels=1", None, 3), r"says in_channels=1 but in_channels=3"),
    (("resnet18", 0, None), r"num_classes must be a positive integer"),
    (("resnet18", None, 2.5), r"in_channels must be a positive integer"),
    (("tv:resnet18", None, 1), r"takes 3 input channels"),
])
def test_bad_build_arguments(args, pattern):
    with pytest.raises(GradlabError, match=pattern) as info:
        build_model(*args)
    assert "\n" not in str(info.value)


def test_mlp_refuses_inputs_of_the_wrong_size():
    import torch

    with pytest.raises(GradlabError, match=r"takes 3x32x32 inputs .* got 1x28x28: build it with matching"):
        build_model("mlp3")(torch.randn(2, 1, 28, 28))


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        register(ZooEntry("resnet34", "imagenet", {}, lambda o: None))
    with pytest.raises(ValueError, match="already registered"):
        register(ZooEntry("mlp12", "mlp", {}, lambda o: None))


def test_list_models_names_only_buildable_models():
    names = list_models()
    assert len(names) == len(set(names))
    for name in names:
        assert str(parse_spec(name)) == name
