"""`gradlab probe package.module:function`: a user's own model factory, probed like a zoo model."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from gradlab.cli import main
from gradlab.models.factory import is_factory_spec
from gradlab.training.probe import probe

FACTORIES = '''
import torch
from torch import nn


def sigmoid_mlp(num_classes, in_channels):
    layers = [nn.Flatten(), nn.Linear(in_channels * 32 * 32, 64), nn.Sigmoid()]
    for _ in range(6):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, num_classes))


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, 50)

    def forward(self, ids):
        return self.head(self.block(self.emb(ids)))


def tiny_lm():
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 50, (4, 10), generator=gen)
    return TinyLM(), ids, torch.roll(ids, -1, dims=1)


def not_a_model():
    return 42
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.nets"
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]


def test_factory_names_are_told_from_zoo_specs():
    assert is_factory_spec("userpkg.nets:make") and is_factory_spec("mymodels:make_net")
    assert not is_factory_spec("mlp4:norm=none") and not is_factory_spec("tv:resnet50")
    assert not is_factory_spec("resnet20") and not is_factory_spec("resnet20:act")


def test_probe_of_a_factory_with_its_own_batch_matches_autograd(user_module):
    (result,) = probe([f"{user_module}:tiny_lm"])
    import importlib

    torch.manual_seed(0)
    model, ids, targets = importlib.import_module(user_module).tiny_lm()
    model.train()
    logits = model(ids)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1)).backward()
    want = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.head.parameters()))
    got = result.layers.query("layer == 'head' and metric == 'grad_norm'")["value"].item()
    assert got == pytest.approx(want, rel=1e-5)
    order = [r["name"] for r in sorted(result.meta["layers"], key=lambda r: r["depth"])]
    assert order[0] == "emb" and order[-1] == "head"
    # out_proj of the block's attention sits right after the attention, not after the head
    assert order.index("block.self_attn.out_proj") == order.index("block.self_attn") + 1


def test_cli_probes_a_factory_and_fits_the_advice_to_its_layers(user_module):
    result = CliRunner().invoke(main, ["probe", f"{user_module}:sigmoid_mlp"])
    assert result.exit_code == 0, result.output
    assert "use ReLU" in result.output  # the layer types say sigmoid
    assert "residual" not in result.output


@pytest.mark.parametrize("spec, message", [
    ("userpkg.nets:not_a_model", "return an nn.Module"),
    ("userpkg.nets:missing", "has no function 'missing'"),
    ("userpkg.absent:make", "cannot import 'userpkg.absent'"),
])
def test_cli_bad_factories_give_one_line_and_exit_2(user_module, spec, message):
    result = CliRunner().invoke(main, ["probe", spec])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
