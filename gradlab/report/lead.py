"""What a report opens with, as a value: the headline's text, its lines and its figures.

Kept apart from :mod:`gradlab.report.headline`, which chooses the headline, so that the
experiment summaries it calls can build one without importing it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradlab.report.style import Section


@dataclass
class Headline:
    """What the report opens with: the sentence(s), supporting lines and the lead figures."""

    text: str
    lines: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    kind: str = "comparison"  # "experiment", "comparison" or "run"
