"""From a recorder to a run directory and report; the Lightning and Hugging Face callbacks,
against the real packages with tiny models built here (nothing downloaded)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradlab.analysis.diagnose import diagnose_run
from gradlab.errors import GradlabError
from gradlab.integrations import describe_model, save_report, save_run
from gradlab.recorder import GradientRecorder
from gradlab.store import RunWriter, load_run


def _sigmoid_mlp(depth: int = 10) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


def _train(model: nn.Module, rec: GradientRecorder, steps: int = 12) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        opt.zero_grad()
        rec.set_labels(y)
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
        opt.step()


def test_save_report_writes_a_run_with_layer_types_that_the_diagnosis_uses(tmp_path):
    model = _sigmoid_mlp()
    with GradientRecorder(model, metrics="all", every=2) as rec:
        _train(model, rec)
        out = save_report(rec, tmp_path / "report.html")
    assert out.exists() and out.stat().st_size > 10_000
    run = load_run(tmp_path / "report-run")
    assert run.status == "finished"
    assert run.meta["model"] == "Sequential" and run.meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert {e["type"] for e in run.meta["layers"]} == {"Linear", "Sigmoid"}
    assert sorted(set(run.layers.step)) == list(range(0, 12, 2))
    late = diagnose_run(run).query("metric == 'act_grad_norm' and phase == 'init'").iloc[0]
    assert late["verdict"] == "vanishing"
    assert "use ReLU" in late["suggestion"] and "residual" not in late["suggestion"]

    # the same records without the layer types: the advice cannot name sigmoid
    bare = tmp_path / "bare"
    with RunWriter(bare, {"model": "Sequential"}) as writer:
        writer.append_layers(run.layers.astype({"layer": str, "metric": str}))
    plain = diagnose_run(load_run(bare)).query("metric == 'act_grad_norm' and phase == 'init'").iloc[0]
    assert "use ReLU" not in plain["suggestion"]


def test_save_run_refuses_what_is_not_a_recorder(tmp_path):
    with pytest.raises(GradlabError, match="GradientRecorder"):
        save_run(object(), tmp_path / "x")  # type: ignore[arg-type]


def test_describe_model_counts_a_tied_parameter_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    info = describe_model(nn.Sequential(emb, head))
    assert info["num_params"] == 40 and info["module_types"] == {"Embedding": 1, "Linear": 1, "Sequential": 1}


@pytest.mark.slow
def test_lightning_callback_records_before_clipping_and_writes_a_run(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlab.integrations.lightning import GradlabCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.randn(32, 4, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=8)
    module = Module()
    ref = copy.deepcopy(module.net)
    callback = GradlabCallback(tmp_path / "run", every=1, metrics="all", report=tmp_path / "r.html")
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1e-3,
                         accumulate_grad_batches=2)
    trainer.fit(module, loader)
    run = load_run(tmp_path / "run")
    assert run.status == "finished" and (tmp_path / "r.html").exists()
    assert sorted(set(run.layers.step)) == [0, 1]  # 4 batches, 2 per optimizer step
    # step 0: the gradient of the first two batches, Lightning's loss divided by 2, unclipped
    for k in range(2):
        (nn.functional.cross_entropy(ref(xs[8 * k:8 * k + 8]), ys[8 * k:8 * k + 8]) / 2).backward()
    want = torch.linalg.vector_norm(torch.cat([p.grad.flatten().double() for p in ref.parameters()]))
    total = run.steps.query("metric == 'total_grad_norm' and step == 0")["value"].item()
    assert total == pytest.approx(float(want), rel=1e-5) and total > 1e-2  # far above the clip value
    assert {e["name"] for e in run.meta["layers"]} == {"net.0", "net.1", "net.2"}
    assert run.layers.query("metric == 'act_grad_cos_class'")["value"].notna().all()  # labels found


@pytest.mark.slow
def test_hugging_face_callback_records_the_unclipped_gradient_of_a_tiny_gpt2(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradlab.integrations.hf import GradlabTrainerCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    gen = torch.Generator().manual_seed(3)
    data = []
    for _ in range(16):
        ids = torch.randint(0, 64, (12,), generator=gen)
        data.append({"input_ids": ids, "labels": ids.clone()})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=3, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        max_grad_norm=1e-3, learning_rate=1e-3, disable_tqdm=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    callback = GradlabTrainerCallback(tmp_path / "run", every=1, metrics="all")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    run = load_run(tmp_path / "run")
    assert run.status == "finished" and sorted(set(run.layers.step)) == [0, 1, 2]
    ours = run.steps.query("metric == 'total_grad_norm'").sort_values("step")["value"].tolist()
    theirs = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]  # the pre-clip norm
    assert ours == pytest.approx([float(v) for v in theirs], rel=1e-5)
    assert min(ours) > 1e-2  # far above max_grad_norm: recorded before clipping
    names = [e["name"] for e in sorted(run.meta["layers"], key=lambda e: e["depth"])]
    assert names[:2] == ["transformer.wte", "transformer.wpe"] and names[-1] == "lm_head"
    assert names.index("transformer.h.0.attn.c_attn") < names.index("transformer.h.1.ln_1")
    # inside the reentrant-checkpointed blocks too, every layer has its activation rows, once
    acts = run.layers.query("metric == 'act_grad_norm' and step == 0")
    assert set(acts.layer) == set(names) and len(acts) == len(names)
    assert not [h for m in model.modules() for h in m._forward_pre_hooks.values()]  # all removed


@pytest.mark.slow
def test_accelerate_wrapped_optimizer_records_once_per_accumulated_step():
    accelerate = pytest.importorskip("accelerate")
    from gradlab.recorder import GradientRecorder as Recorder

    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    model, opt = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    assert type(opt).__name__ == "AcceleratedOptimizer"  # the premise: the wrapper, not torch's
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 4, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(4)]
    with Recorder(model, optimizer=opt) as rec:
        for x, y in batches:
            with accelerator.accumulate(model):
                accelerator.backward(nn.functional.cross_entropy(model(x), y))
                opt.step()
                opt.zero_grad()
    assert sorted(set(rec.to_frame().step)) == [0, 1]  # 4 micro-batches, 2 optimizer steps
    for x, y in batches[:2]:  # Accelerate divides each micro-batch's loss by 2
        (nn.functional.cross_entropy(ref(x), y) / 2).backward()
    want = float(torch.linalg.vector_norm(torch.cat([p.grad.flatten().double() for p in ref.parameters()])))
    got = rec.step_frame().query("step == 0 and metric == 'total_grad_norm'")["value"].item()
    assert got == pytest.approx(want, rel=1e-5)


def test_run_sink_keeps_what_was_flushed_when_training_dies(tmp_path):
    from gradlab.integrations import RunSink

    model = _sigmoid_mlp(depth=2)
    with GradientRecorder(model, every=1) as rec:
        with pytest.raises(RuntimeError, match="boom"):
            with RunSink(rec, tmp_path / "run") as sink:
                _train(model, rec, steps=3)
                sink.flush()
                _train(model, rec, steps=2)  # not flushed by hand: the failed close() writes them
                raise RuntimeError("boom")
    run = load_run(tmp_path / "run")
    assert run.status == "failed" and "boom" in run.meta["error"]
    assert sorted(set(run.layers.step)) == [0, 1, 2, 3, 4]  # close() flushes what was left
    assert run.meta["steps_done"] == 5
