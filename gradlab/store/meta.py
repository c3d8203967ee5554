"""A run's ``meta.json``: read it, amend a closed run's, and word an error for its ``error`` field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gradlab.errors import GradlabError, first_line
from gradlab.store.files import write_json
from gradlab.store.layout import META_FILE


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a run directory as a dict, with the status as recorded.

    Raises :class:`GradlabError` naming the path when it is not a run directory or its
    meta.json cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise GradlabError(f"run directory {path} does not exist; pass a directory written by "
                           "gradlab (list them with `gradlab runs DIR`)")
    if not path.is_dir():
        raise GradlabError(f"{path} is not a directory; pass a run directory (one holding "
                           f"{META_FILE})")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise GradlabError(f"{path} is not a run directory (no {META_FILE}); pass a directory "
                           "written by gradlab (list them with `gradlab runs DIR`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = first_line(exc)
        raise GradlabError(f"{meta_path} cannot be read ({detail}); the run directory is "
                           "damaged: train it again or delete it") from None
    if not isinstance(meta, dict):
        raise GradlabError(f"{meta_path} does not hold a JSON object; the run directory is "
                           "damaged: train it again or delete it")
    return meta


def update_run_meta(path: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into a closed run's meta.json, written atomically; returns the new meta.

    For information added after a run finished (a run recorded by an older gradlab gets the
    fields a newer one stores). Never touches the tables.
    """
    path = Path(path)
    meta = read_meta(path)
    meta.update(fields)
    write_json(path / META_FILE, meta)
    return meta


def one_line(value: BaseException | str | None, limit: int = 500) -> str:
    """A single line describing an error: ``Type: first line of message``, truncated."""
    if isinstance(value, BaseException):
        message = str(value).strip()
        text = f"{type(value).__name__}: {message}" if message else type(value).__name__
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
