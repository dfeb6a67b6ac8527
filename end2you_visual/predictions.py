"""The predictions format: one place for what `test` and `predict` write
and `evaluate` reads.

* Per-file CSVs (``docs/format.md``): a ``time`` column (seconds), one
  column per output (activated: values or probabilities), optionally
  ``face_found`` (1/0) and, for categorical models, ``top_class`` (the name
  of the most probable output; text, not an output). A missing value (a
  frame without a face in `predict`, a gap) is an EMPTY cell, written and
  read the same way everywhere (the reader also takes ``nan``).
* ``predictions.h5`` of `test` (:func:`write_predictions_h5`,
  :func:`load_predictions`): every sequence's times, predictions,
  face_found and labels, with the model's configuration.
* Output stems (:func:`unique_stems`): one file-system-safe, unique stem
  per sequence or video.

::

    from end2you_visual.predictions import read_prediction_csv, load_predictions
    series = read_prediction_csv("out/test/predictions/p01.csv")
    names, sequences = load_predictions("out/test/predictions.h5")
"""
import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import h5py
import numpy as np

from . import __version__
from .errors import InputError
from .files import atomic_path, atomic_write_text, expand_paths

__all__ = [
    "PREDICTIONS_FORMAT", "PREDICTIONS_VERSION", "TOP_CLASS", "SequencePrediction",
    "SeriesFile", "read_prediction_csv", "read_prediction_csvs", "write_prediction_csv",
    "top_classes", "csv_paths", "write_predictions_h5", "load_predictions", "unique_stems",
]

PathLike = Union[str, "os.PathLike[str]"]

PREDICTIONS_FORMAT = "end2you-visual-predictions"
PREDICTIONS_VERSION = 1
TOP_CLASS = "top_class"  # the class column of categorical prediction CSVs (text, not an output)


@dataclass
class SequencePrediction:
    """The predictions of one sequence (see :func:`load_predictions`)."""

    name: str             # CSV stem
    file: str             # the HDF5 file
    sequence: str         # the sequence's name in that file
    fps: float
    time: np.ndarray      # (T,) seconds
    predictions: np.ndarray  # (T, outputs), activated
    face_found: np.ndarray   # (T,) bool
    labels: Optional[np.ndarray] = None  # (T, outputs) targets in output order, or None
    split: str = ""       # the input CSV's split of the sequence ("" if none)


# ------------------------------------------------------------------ CSV files

def top_classes(values: Any, names: Sequence[str],
                face_found: Optional[Any] = None) -> List[str]:
    """Per row, the name of the output with the highest value (a categorical
    model's top class), or ``""`` where no face was found or the row holds
    no finite value."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    valid = finite.any(axis=1) if values.size else np.zeros(len(values), bool)
    if face_found is not None:
        valid &= np.asarray(face_found, bool)
    top = np.where(finite, values, -np.inf).argmax(axis=1) if values.size else []
    return [str(names[k]) if ok else "" for k, ok in zip(top, valid)]


def write_prediction_csv(path: PathLike, time: Any, names: Sequence[str], values: Any,
                         face_found: Optional[Any] = None, top_class: bool = False) -> None:
    """Write a prediction CSV atomically: ``time``, the outputs ``names``,
    ``face_found`` (1/0) when given and, with ``top_class``, a
    :data:`TOP_CLASS` column of :func:`top_classes`. Numbers are written
    with ``repr`` precision; NaN values become empty cells."""
    lines = [",".join(["time", *names] + (["face_found"] if face_found is not None else [])
                      + ([TOP_CLASS] if top_class else []))]
    tops = top_classes(values, names, face_found) if top_class else []
    for i in range(len(time)):
        cells = [repr(float(time[i]))]
        cells += ["" if math.isnan(v) else repr(float(v)) for v in values[i]]
        if face_found is not None:
            cells.append("1" if face_found[i] else "0")
        if top_class:
            cells.append(tops[i])
        lines.append(",".join(cells))
    atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass
class SeriesFile:
    """One prediction CSV: ``time`` (T,) seconds, ``values`` (T, D) float64
    for ``names`` (NaN = empty cell), ``face_found`` (T,) bool or None."""
    path: Path
    time: np.ndarray
    names: List[str]
    values: np.ndarray
    face_found: Optional[np.ndarray] = None

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def fps(self) -> float:
        """Frames per second from the time column: (T - 1) / duration,
        rounded to 6 decimals (so 0.04 s steps give exactly 25.0)."""
        return round((len(self.time) - 1) / float(self.time[-1] - self.time[0]), 6)


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def read_prediction_csv(path: PathLike, outputs: Optional[Sequence[str]] = None) -> SeriesFile:
    """Read a per-file prediction CSV: a header with ``time``, the output
    columns and optionally ``face_found`` (1/0, true/false) and ``top_class``
    (skipped). ``outputs`` selects output columns (default: all other
    columns). Empty output cells read as NaN. Times must strictly increase
    with a near-constant step (no skipped frames: every step within half
    the median step of it)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [r for r in csv.reader(handle) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read prediction file: {error}") from error
    if not rows:
        raise InputError(path, "is empty (no header row)")
    header = [c.strip() for c in rows[0]]
    if "time" not in header:
        raise InputError(path, f"has no 'time' column; the columns are {header}")
    face_col = "face_found" if "face_found" in header else None
    names = ([c for c in header if c not in ("time", face_col, TOP_CLASS)]
             if outputs is None else list(outputs))
    missing = [n for n in names if n not in header]
    if missing:
        raise InputError(path, f"has no column(s) {missing}; the columns are {header}")
    if not names:
        raise InputError(path, "has no output columns")
    body = rows[1:]
    if len(body) < 2:
        raise InputError(path, f"needs at least 2 data rows, has {len(body)}")
    cols = [header.index(n) for n in names]
    t_col = header.index("time")
    time = np.empty(len(body))
    values = np.empty((len(body), len(names)))
    face = np.ones(len(body), bool) if face_col else None
    for i, r in enumerate(body):
        line = i + 2
        if len(r) != len(header):
            raise InputError(path, f"row {line} has {len(r)} cells, the header {len(header)}")
        time[i] = _number(path, line, "time", r[t_col], allow_empty=False)
        for j, c in enumerate(cols):
            values[i, j] = _number(path, line, names[j], r[c], allow_empty=True)
        if face is not None:
            face[i] = _flag(path, line, r[header.index("face_found")])
    _check_uniform_time(path, time)
    return SeriesFile(path=path, time=time, names=names, values=values, face_found=face)


def _number(path: PathLike, line: int, column: str, cell: str, allow_empty: bool) -> float:
    cell = cell.strip()
    if allow_empty and cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise InputError(path, f"row {line}, column {column!r}: {cell!r} is not a number") from None


def _flag(path: PathLike, line: int, cell: str) -> bool:
    c = cell.strip().lower()
    if c in _TRUE:
        return True
    if c in _FALSE:
        return False
    raise InputError(path, f"row {line}, column 'face_found': {cell!r} is not 0/1")


def _check_uniform_time(path: PathLike, time: np.ndarray) -> None:
    if not np.isfinite(time).all():
        raise InputError(path, "time column contains NaN or infinity")
    steps = np.diff(time)
    if (steps <= 0).any():
        raise InputError(path, f"times must strictly increase (row {int(np.argmax(steps <= 0)) + 3})")
    med = float(np.median(steps))
    if (np.abs(steps - med) > 0.5 * med).any():
        row = int(np.argmax(np.abs(steps - med) > 0.5 * med)) + 3
        raise InputError(path, f"time steps are not uniform (row {row}: {steps[row - 3]:g} s "
                               f"vs the median {med:g} s); one row per frame is needed")


def csv_paths(paths: Union[PathLike, Iterable[PathLike]]) -> List[Path]:
    """The CSV files among ``paths`` (files, and ``*.csv`` of folders,
    hidden files skipped); their stems must be unique."""
    out = expand_paths(paths, (".csv",), "CSV files", recursive=False)
    stems = [p.stem for p in out]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(None, f"several CSV files share the stem(s) {dup}")
    return out


def read_prediction_csvs(paths: Union[PathLike, Iterable[PathLike]],
                         outputs: Optional[Sequence[str]] = None) -> List[SeriesFile]:
    """Read prediction CSVs from files and/or folders (``*.csv``, sorted);
    returns a list of :class:`SeriesFile`. All files must have the same
    output columns. Stems must be unique."""
    files = [read_prediction_csv(p, outputs) for p in csv_paths(paths)]
    for f in files[1:]:
        if f.names != files[0].names:
            raise InputError(f.path, f"output columns {f.names} differ from "
                                     f"{files[0].names} in {files[0].path}")
    return files


# --------------------------------------------------------------- predictions.h5

def write_predictions_h5(path: PathLike, results: Sequence[SequencePrediction],
                         label_names: Sequence[str], head: str, label_kind: str,
                         window: Optional[int], model_config: Dict[str, Any]) -> None:
    """Write :class:`SequencePrediction` s ``results`` to ``path`` (HDF5),
    atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        offsets = np.cumsum([0] + [len(r.time) for r in results]).astype(np.int64)
        d = len(label_names)

        def cat(arrays: List[np.ndarray], shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

        h5["predictions"] = cat([r.predictions for r in results], (0, d), np.float32)
        h5["timestamps"] = cat([r.time for r in results], (0,), np.float64)
        h5["face_found"] = cat([r.face_found for r in results], (0,), bool)
        if any(r.labels is not None for r in results):
            h5["labels"] = cat([r.labels if r.labels is not None
                                else np.full((len(r.time), d), np.nan, np.float32)
                                for r in results], (0, d), np.float32)
        seq = h5.create_group("sequences")
        seq["offsets"] = offsets
        seq["fps"] = np.array([r.fps for r in results], np.float64)
        text = h5py.string_dtype("utf-8")
        for key, values in (("name", [r.name for r in results]),
                            ("file", [r.file for r in results]),
                            ("sequence", [r.sequence for r in results]),
                            ("split", [r.split for r in results])):
            seq.create_dataset(key, data=np.array(values, dtype=object), dtype=text)
        h5.attrs.update({
            "format": PREDICTIONS_FORMAT, "version": PREDICTIONS_VERSION,
            "label_names": json.dumps(list(label_names)), "head": head,
            "label_kind": label_kind, "window": -1 if window is None else int(window),
            "model_config": json.dumps(model_config),
            "created_by": f"end2you-visual {__version__}",
        })


def load_predictions(path: PathLike) -> Tuple[List[str], List[SequencePrediction]]:
    """The sequences of a ``predictions.h5`` written by `test`.

    Returns:
        ``(label_names, [SequencePrediction, ...])``.
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from err
    with h5:
        if h5.attrs.get("format") != PREDICTIONS_FORMAT:
            raise InputError(path, f"not an {PREDICTIONS_FORMAT} file")
        names = json.loads(h5.attrs["label_names"])
        seq = h5["sequences"]
        offsets = seq["offsets"][:]
        keys = [k for k in ("name", "file", "sequence", "split") if k in seq]
        text = {k: [v.decode() if isinstance(v, bytes) else str(v) for v in seq[k][:]]
                for k in keys}
        preds, times, face = h5["predictions"][:], h5["timestamps"][:], h5["face_found"][:]
        labels = h5["labels"][:] if "labels" in h5 else None
        out = []
        for q in range(len(offsets) - 1):
            a, b = offsets[q], offsets[q + 1]
            y = None if labels is None else labels[a:b]
            if y is not None and np.isnan(y).all() and b > a:
                y = None
            out.append(SequencePrediction(text["name"][q], text["file"][q], text["sequence"][q],
                                          float(seq["fps"][q]), times[a:b], preds[a:b],
                                          face[a:b], y, text["split"][q] if "split" in text
                                          else ""))
    return names, out


# ---------------------------------------------------------------------- stems

def _clean(text: object) -> str:
    text = str(text).replace("\\", "/").strip("/")
    return "__".join(p for p in text.split("/") if p not in ("", ".", "..")) or "sequence"


def unique_stems(names: Sequence[str], prefixes: Optional[Sequence[str]] = None) -> List[str]:
    """A unique, file-system-safe output stem per name.

    Path separators become ``__``; with ``prefixes`` (e.g. the HDF5 files'
    stems), a name that occurs more than once is prefixed by its own
    (``p01__seq``); any stem still taken gets ``__2``, ``__3``...
    """
    first = [_clean(n) for n in names]
    counts = {s: first.count(s) for s in first}
    stems: List[str] = []
    used: Set[str] = set()
    for q, stem in enumerate(first):
        if prefixes is not None and counts[stem] > 1:
            stem = f"{_clean(prefixes[q])}__{stem}"
        base, i = stem, 2
        while stem in used:
            stem, i = f"{base}__{i}", i + 1
        used.add(stem)
        stems.append(stem)
    return stems
