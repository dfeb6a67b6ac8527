"""`generate`'s manifest: one :class:`Result` per output file, written with
the run's settings and totals to ``manifest.json`` (or
``manifest-shard<i>of<n>.json``) in the output folder."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import __version__
from .files import atomic_write_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["MANIFEST", "Result", "write_manifest", "warn_results"]

MANIFEST = "manifest.json"


@dataclass
class Result:
    """What happened to one output file; one row of the manifest.

    ``status``: "written" (by this run), "skipped" (complete on disk: by an
    earlier run, or by another run this one waited for) or "failed"
    (``error`` says why; nothing was written). ``frames``, ``faces_found``,
    ``sequences``, ``fps``: what the file holds (for skipped files too).
    ``decoded_frames`` / ``expected_frames`` (videos): the frames that
    decoded and the count the video's header gives (an estimate; a
    container whose duration includes a longer audio track overstates it);
    a video that stops decoding early with an error is also in
    ``warnings``.
    """

    output: str
    inputs: list[str]
    status: str = "written"          # "written", "skipped" or "failed"
    frames: int = 0
    faces_found: int = 0
    sequences: int = 0
    fps: float | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    decoded_frames: int | None = None
    expected_frames: int | None = None
    audio_found: bool | None = None
    persons: list[dict[str, Any]] | None = None            # --faces all / person column: the people written


def write_manifest(path: Path, results: Sequence[Result], settings: DataclassInstance,
                   source: str | os.PathLike[str],
                   subjects: dict[str, Any] | None = None) -> Path:
    """Write the manifest JSON atomically: settings, totals, the subjects
    known (:func:`~end2you_visual.inputs.assign_subjects`) and one row per output."""
    totals = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    doc = {
        "created_by": f"end2you-visual {__version__}",
        "source": str(source),
        "settings": asdict(settings),
        "totals": totals,
        **({"subjects": subjects} if subjects is not None else {}),
        "files": [asdict(r) for r in results],
    }
    atomic_write_text(path, json.dumps(doc, indent=2, default=str))
    return path


def warn_results(results: Sequence[Result], manifest: str | os.PathLike[str],
                 at_most: int = 20) -> None:
    """One Python warning per result warning (the first ``at_most``)."""
    lines = [w for r in results for w in r.warnings]
    for line in lines[:at_most]:
        warnings.warn(line, stacklevel=3)
    if len(lines) > at_most:
        warnings.warn(f"{len(lines) - at_most} more warnings in {manifest}", stacklevel=3)
