"""One forward and backward pass at initialisation: the quickest look at a network's gradient.

``probe`` builds each model, runs one batch through it in training mode with the recorder
attached, and returns per-layer gradient norms with the diagnosis: in seconds, before any
GPU-day is spent on a network whose gradient never reaches its first layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradlab.analysis.collapse import finding_words, similarity_findings
from gradlab.analysis.diagnose import diagnose_run, format_diagnosis
from gradlab.common import metrics as M
from gradlab.errors import GradlabError
from gradlab.models import build_model, parse_spec
from gradlab.models.factory import build_from_factory, is_factory_spec, probe_loss
from gradlab.recorder import GradientRecorder
from gradlab.report import build_report
from gradlab.store import Run
from gradlab.training.data import data_shape, load_data
from gradlab.training.device import resolve_device
from gradlab.training.prediction import meanfield_prediction
from gradlab.training.preflight import check_model_fits


@dataclass
class ProbeResult:
    """What one probe saw: the model spec, the recorded rows, and the diagnosis."""

    spec: str
    meta: dict[str, Any]
    layers: pd.DataFrame
    steps: pd.DataFrame
    diagnosis: pd.DataFrame

    def run(self) -> Run:
        """The probe as a :class:`gradlab.store.Run`, for reports."""
        return Run(path=Path(self.spec), meta=self.meta, layers=self.layers, steps=self.steps)


_KNOWN_DATA = ("synthetic", "cifar10", "cifar100", "mnist", "fashion-mnist")


def probe(
    models: list[str],
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    data: str = "synthetic",
    data_dir: str | None = None,
) -> list[ProbeResult]:
    """Probe each model on one batch of ``data`` at initialisation.

    A model is a zoo spec (``resnet56``, ``mlp30:act=sigmoid``), a torchvision name
    (``tv:resnet50``) or a user's factory (``package.module:function``, see gradlab.models.factory).
    """
    if not models:
        raise GradlabError("give at least one model spec, e.g. gradlab probe plain56:norm=none resnet56")
    if batch_size <= 0:
        raise GradlabError(f"batch size must be positive, got {batch_size}: pass e.g. --batch-size 64")
    # refuse bad specs before any work
    specs = [m.strip() if is_factory_spec(m) else str(parse_spec(m)) for m in models]
    dev = resolve_device(device)
    input_size, classes, _ = data_shape(data) if data in _KNOWN_DATA else ((3, 32, 32), None, 0)
    for spec in specs:  # a model too large for memory is refused before any is built
        check_model_fits(spec, batch_size, input_size, classes, dev.type, optimizer=None)
    bundle = load_data(data, data_dir=data_dir, seed=seed,
                       train_size=max(batch_size, 64) if data == "synthetic" else None)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=batch_size, shuffle=False)
    x, y = next(iter(loader))
    x, y = x.to(dev), y.to(dev)

    settings = {"batch_size": batch_size, "seed": seed, "data": data}
    return [_probe_one(spec, x, y, bundle, dev, settings) for spec in specs]


def _probe_one(spec: str, x: torch.Tensor, y: torch.Tensor, bundle: Any, dev: torch.device,
               settings: dict[str, Any]) -> ProbeResult:
    """One model, built from ``settings["seed"]``, through one batch with the recorder attached."""
    torch.manual_seed(settings["seed"])
    model, inputs, targets = _build_probed(spec, x, y, bundle, dev)
    model.train()
    with GradientRecorder(model, metrics="all") as rec:
        if isinstance(targets, torch.Tensor) and targets.dim() == 1:
            rec.set_labels(targets)
        loss = probe_loss(model, inputs, targets)
        loss.backward()
        rec.step()
        layers = rec.to_frame()
        steps = pd.concat(
            [rec.step_frame(), pd.DataFrame({"step": [0], "metric": [M.LOSS], "value": [float(loss.detach())]})],
            ignore_index=True,
        )
        meta = {
            "name": spec,
            "model": spec,
            "status": "finished",
            "spec": {"model": spec, "probe": True, **settings},
            "layers": rec.layer_table(),
            "nonfinite_first": rec.nonfinite_first,
            "num_params": sum(p.numel() for p in model.parameters()),
            "meanfield": _meanfield(spec, model, inputs is x, tuple(bundle.input_size)),
        }
    result = ProbeResult(spec, meta, layers, steps, pd.DataFrame())
    result.diagnosis = diagnose_run(result.run())
    return result


def _build_probed(spec: str, x: torch.Tensor, y: torch.Tensor, bundle: Any,
                  dev: torch.device) -> tuple[nn.Module, Any, Any]:
    """The model on ``dev`` and the batch it is probed on: the data's, or a factory's own."""
    if not is_factory_spec(spec):
        model = build_model(spec, num_classes=bundle.num_classes, in_channels=bundle.input_size[0])
        return model.to(dev), x, y
    built = build_from_factory(spec, num_classes=bundle.num_classes, in_channels=bundle.input_size[0])
    model = built.model.to(dev)
    if not built.has_batch:
        return model, x, y
    inputs = ({k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in built.inputs.items()}
              if isinstance(built.inputs, dict) else built.inputs.to(dev))
    targets = None if built.targets is None else built.targets.to(dev)
    return model, inputs, targets


def _meanfield(spec: str, model: nn.Module, on_data: bool, input_size: tuple[int, ...]) -> Any:
    """The mean-field prediction; for a user's model only on image data, and only if it traces."""
    if not is_factory_spec(spec):
        return meanfield_prediction(model, input_size)
    if not on_data:
        return None
    try:
        return meanfield_prediction(model, input_size)
    except Exception:  # noqa: BLE001 - the theory is an extra; a model it cannot read has none
        return None


def format_probe(results: list[ProbeResult], max_rows: int = 200) -> str:
    """The printed form: per-layer norms, first-to-last ratios and the diagnosis."""
    blocks = []
    for r in results:
        norms = r.layers[r.layers["metric"].isin([M.GRAD_NORM, M.ACT_GRAD_NORM])]
        cells = {(row.layer, row.metric): row.value for row in norms.itertuples()}
        order = norms[["depth", "layer"]].drop_duplicates().sort_values("depth")
        lines = [f"== {r.spec}  ({r.meta['num_params']:,} parameters)"]
        lines.append(f"{'depth':>5}  {'layer':<32} {M.GRAD_NORM:>13} {M.ACT_GRAD_NORM:>13}")
        for row in order.head(max_rows).itertuples():
            lines.append(
                f"{int(row.depth):>5}  {str(row.layer)[:32]:<32} "
                f"{_fmt(cells.get((row.layer, M.GRAD_NORM)))} "
                f"{_fmt(cells.get((row.layer, M.ACT_GRAD_NORM)))}"
            )
        if len(order) > max_rows:
            lines.append(f"  ... {len(order) - max_rows} more layers")
        lines.append(format_diagnosis(r.diagnosis))
        lines.extend(f"  {finding_words(f)}" for f in similarity_findings(r.run()))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_probe_report(results: list[ProbeResult], html: str | Path) -> Path:
    """An HTML report of the probes (one step each: the init phase)."""
    return build_report([r.run() for r in results], Path(html), title="gradlab probe at initialisation")


def _fmt(value: float | None, width: int = 13) -> str:
    """A norm for the table: '-' when not recorded, zeros marked as underflow."""
    if value is None:
        return f"{'-':>{width}}"
    if value == 0.0:
        return f"{'0 underflow':>{width}}"
    return f"{value:>{width}.3e}"
