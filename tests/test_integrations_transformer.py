"""Transformers as the diagnosis and report see them: depth order, LayerNorm as normalisation,
attention as residual, and no convolution or skip-connection advice."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradlab.analysis.diagnose import THRESHOLDS, _suggest, model_traits
from gradlab.integrations import describe_model
from gradlab.recorder import GradientRecorder


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 16)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
                                      for _ in range(2)])
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 30)

    def forward(self, ids):
        return self.head(self.norm(self.blocks(self.emb(ids))))


def _recorded_meta():
    torch.manual_seed(0)
    model = _Tiny()
    with GradientRecorder(model, metrics="all") as rec:
        model(torch.randint(0, 30, (3, 7))).sum().backward()
        rec.step()
    return {"layers": rec.layer_table(), **describe_model(model)}


def test_depth_runs_embedding_blocks_head_with_attention_before_its_out_proj_and_mlp():
    names = [e["name"] for e in _recorded_meta()["layers"]]  # in depth order
    assert names[0] == "emb" and names[-2:] == ["norm", "head"]
    for b in ("blocks.0", "blocks.1"):
        attn, out = names.index(f"{b}.self_attn"), names.index(f"{b}.self_attn.out_proj")
        assert out == attn + 1 and names.index(f"{b}.linear1") > out
    assert names.index("blocks.0.linear2") < names.index("blocks.1.self_attn")


def test_a_transformer_is_normalised_and_residual_and_gets_no_batchnorm_or_skip_advice():
    traits = model_traits(_recorded_meta())
    assert traits["normalised"] is True and traits["residual"] is True and traits["saturating"] is False
    row = {"verdict": "vanishing", "saturated_frac": np.nan, "dead_frac": np.nan,
           "total_norm_p10": np.nan, "total_norm_p50": np.nan, "total_norm_p90": np.nan}
    advice, _ = _suggest(row, traits, {}, THRESHOLDS)
    assert "BatchNorm" not in advice and "add residual" not in advice and "pre-LayerNorm" in advice
