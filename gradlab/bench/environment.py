"""The versions and machine a measurement ran on, so that a figure can be traced to its setting."""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

import gradlab.recorder as recorder_pkg
from gradlab._version import __version__


def environment(device: torch.device) -> dict[str, Any]:
    """The versions and machine a measurement ran on."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "gradlab": __version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "load_avg_start": list(load),
        "recorder_source": recorder_source_hash(),
    }


def recorder_source_hash() -> str | None:
    """A short hash of the recorder's source files: which version of it a figure belongs to."""
    try:
        folder = Path(recorder_pkg.__file__).parent
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:12]
    except OSError:
        return None

