"""Names that become paths: a run's model spec, an experiment's name, a report's file name.

Whatever a user or a file gives as a name is turned into one safe path component: letters,
digits and ``_ . = -`` only, never empty, never ``.`` or ``..``, never starting with a dot (no
hidden files), and short. So ``name = "../../x"`` or an absolute path stays inside the output
directory it was meant for.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def safe_slug(text: str, *, limit: int = 80, fallback: str = "run") -> str:
    """One path component made from ``text`` (see the module docstring)."""
    slug = _UNSAFE.sub("_", str(text))
    slug = re.sub(r"\.{2,}", "_", slug)  # no '..' anywhere, so no traversal after joining
    slug = slug.strip("._-")[:limit].strip("._-")
    return slug or fallback
