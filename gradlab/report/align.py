"""Aligning networks of different depth on one axis: stem, stage 1..K, head.

Residual networks and their plain twins share module names (``layer<S>.<B>.conv1`` for
stage S, block B), so a layer's place in the network can be read from its name. Each
network is cut into segments: the stem (layers before the first stage), one segment per
stage and the head (layers after the last stage). Inside a stage each block gets an equal
share and each layer an equal share of its block, in forward order. Positions are then
scaled to [0, 1], so plain34 and resnet34 (and resnet20 and resnet56) line up stage by
stage even though one has more layers per block than the other.

Networks without stages (MLPs) get their relative depth: rank / (layers - 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STAGE_RE = re.compile(r"(?:^|\.)layer(\d+)\.(\d+)(?:\.|$)")


@dataclass
class Alignment:
    """Positions in [0, 1] for each layer, and the labelled segments of the axis."""

    positions: dict[str, float]
    segments: list[tuple[str, float, float]]  # (label, start, end) in [0, 1]; empty: no stages

    @property
    def staged(self) -> bool:
        return bool(self.segments)


def parse_stage(name: str) -> tuple[int, int] | None:
    """(stage, block) from a name such as ``layer3.4.conv2``; None when it has none."""
    match = STAGE_RE.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def align(names: Sequence[str], depths: Sequence[int]) -> Alignment:
    """Positions of the layers ``names`` (with forward depths) on the aligned axis."""
    order = sorted(range(len(names)), key=lambda i: (depths[i], names[i]))
    names = [names[i] for i in order]
    if not names:
        return Alignment({}, [])
    keys = [parse_stage(n) for n in names]
    staged = [i for i, k in enumerate(keys) if k is not None]
    if not staged:
        n = len(names)
        return Alignment({name: (i / (n - 1) if n > 1 else 0.0) for i, name in enumerate(names)}, [])
    first, last = staged[0], staged[-1]
    # Unparsed layers between stages (rare) join the block of the layer before them.
    for i in range(first, last + 1):
        if keys[i] is None:
            keys[i] = keys[i - 1]
    stages = sorted({k[0] for k in keys[first:last + 1]})
    n_seg = len(stages) + 2
    stage_index = {s: j + 1 for j, s in enumerate(stages)}
    raw: dict[str, float] = {}
    stem, head = names[:first], names[last + 1:]
    for j, name in enumerate(stem):
        raw[name] = (j + 0.5) / len(stem)
    for j, name in enumerate(head):
        raw[name] = n_seg - 1 + (j + 0.5) / len(head)
    by_block: dict[tuple[int, int], list[str]] = {}
    for i in range(first, last + 1):
        by_block.setdefault(keys[i], []).append(names[i])
    for s in stages:
        blocks = sorted(b for (st, b) in by_block if st == s)
        for bi, b in enumerate(blocks):
            members = by_block[(s, b)]
            for j, name in enumerate(members):
                raw[name] = stage_index[s] + (bi + (j + 0.5) / len(members)) / len(blocks)
    positions = {name: value / n_seg for name, value in raw.items()}
    segments = [("stem", 0.0, 1 / n_seg)]
    segments += [(f"stage {s}", stage_index[s] / n_seg, (stage_index[s] + 1) / n_seg) for s in stages]
    segments.append(("head", (n_seg - 1) / n_seg, 1.0))
    return Alignment(positions, segments)


def common_segments(alignments: Sequence[Alignment]) -> list[tuple[str, float, float]]:
    """The segments to label a shared axis with: those of the staged runs when they agree."""
    staged = [a.segments for a in alignments if a.staged]
    if not staged or any(s != staged[0] for s in staged[1:]):
        return []
    return staged[0]


def axis_ticks(segments: list[tuple[str, float, float]]) -> dict:
    """Plotly axis settings: segment labels at their centres, or relative-depth ticks."""
    if not segments:
        return dict(title_text="relative depth (0 = input, 1 = output)", range=[-0.02, 1.02])
    return dict(
        title_text="position in the network (aligned by stage and block)",
        tickvals=[(a + b) / 2 for _, a, b in segments],
        ticktext=[label for label, _, _ in segments],
        range=[0, 1],
        showgrid=False,
    )


def segment_lines(segments: list[tuple[str, float, float]]) -> np.ndarray:
    """Boundaries between segments (for faint vertical lines)."""
    return np.array([a for _, a, _ in segments[1:]])
