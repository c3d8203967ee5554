"""Text for ``gradlab models``: the zoo, or one spec in detail, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from gradlab.errors import GradlabError
from gradlab.models.describe import describe_model, zoo_rows
from gradlab.models.options import OPTIONS

FORMATS = ("table", "json", "csv")

_LISTING_NOTES = (
    "MACs: multiply-adds of convolution and linear layers, one sample at the input size shown; "
    "paper: He et al. 2015, Table 1.",
    "classes: 1000 for ImageNet-style nets, 10 for CIFAR-style nets and MLPs, unless --classes is given.",
    "Also: mlpN for any N >= 1 (N linear layers), and tv:NAME for any torchvision classification model.",
    "Options: NAME:key=value,... (act, norm, init, zero_init_residual, shortcut, width, stem, size, "
    "in_channels, classes); see `gradlab models --spec NAME` for one model's options.",
)


def human_macs(macs: int) -> str:
    """1814073344 -> '1.814 G'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.3f} {unit}" if unit == "G" else f"{macs / scale:.2f} {unit}"
    return str(macs)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def _listing(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    header = ["name", "family", "params", "macs", "paper_gmacs", "input_size", "classes", "depth"]
    if fmt == "csv":
        return _csv(header, [[r["name"], r["family"], r["params"], r["macs"], r["paper_gmacs"] or "",
                              _shape(r["input_size"]), r["classes"], r["depth"]] for r in rows])
    table = _table(
        ["name", "family", "params", "MACs", "paper", "input", "classes", "depth"],
        [[r["name"], r["family"], f"{r['params']:,}", human_macs(r["macs"]),
          f"{r['paper_gmacs']} G" if r["paper_gmacs"] else "", _shape(r["input_size"]), r["classes"], r["depth"]]
         for r in rows],
        right={2, 3, 4, 6, 7},
    )
    return table + "\n\n" + "\n".join(_LISTING_NOTES)


def _detail(info: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(info, indent=2)
    header = ["layer", "type", "output_shape", "params", "macs"]
    rows = [[r["name"], r["type"], _shape(r["output_shape"]), r["params"], r["macs"]] for r in info["layers"]]
    if fmt == "csv":
        return _csv(header, rows)
    options = ", ".join(f"{k}={OPTIONS[k].format(v)}" for k, v in info["options"].items())
    summary = [
        ("spec", info["name"]),
        ("family", info["family"]),
        ("options", options),
        ("input", _shape(info["input_size"])),
        ("classes", info["classes"]),
        ("depth", f"{info['depth']} (convolution and linear layers, shortcuts not counted)"),
        ("params", f"{info['params']:,}"),
        ("MACs", f"{human_macs(info['macs'])} ({info['macs']:,})"
                 + (f"; paper: {info['paper_gmacs']} G" if info["paper_gmacs"] else "")),
    ]
    head = "\n".join(f"{k:<8}  {v}" for k, v in summary)
    body = _table(["layer", "type", "output", "params", "MACs"],
                  [[r[0], r[1], r[2], f"{r[3]:,}", f"{r[4]:,}"] for r in rows], right={3, 4})
    return f"{head}\n\n{body}"


def models_text(spec: str | None = None, num_classes: int | None = None, fmt: str = "table") -> str:
    """What ``gradlab models`` prints: every name, or ``spec`` in detail, in ``fmt``."""
    if fmt not in FORMATS:
        raise GradlabError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if spec is None:
        return _listing(zoo_rows(num_classes), fmt)
    return _detail(describe_model(spec, num_classes=num_classes), fmt)
