"""The validation-chosen post-processing chain of continuous predictions.

Per output dimension, four steps are tried in this order, each kept only if
it raises the validation CCC (AVEC way: all validation files concatenated
into one sequence) by more than ``min_gain`` (default 1e-9, so float noise
never "improves" anything):

(a) median filter per file; the window is searched over ``MEDIAN_WINDOWS_S``
    (a geometric grid of 40 values from 0.04 s to 20 s), each turned into the
    nearest odd number of frames at the data's frame rate (duplicates and the
    1-frame identity dropped). Edges repeat the end values
    (``scipy.ndimage.median_filter(mode="nearest")``).
(b) centring: add ``bias = mean(gt) - mean(pred)`` (validation, after (a)).
(c) scaling around the prediction mean:
    ``pred' = c + (pred - c) * std(gt) / std(pred)`` where ``c`` is the mean
    of the validation predictions after (a) and (b) (so ``c = mean(gt)``
    when (b) was kept) and the standard deviations are population (1/N)
    ones over all validation frames. ``c`` and the ratio are stored and
    applied unchanged to test data.
(d) forward time shift by ``s`` frames per file:
    ``pred'[t] = pred[t + s]``, the last ``s`` frames repeat the last
    prediction (predictions lag the annotators). Searched over every whole
    number of frames from 0.04 s to 10 s (``SHIFT_RANGE_S``) at the data's
    frame rate.

The best candidate of a search is the first with the highest CCC (smallest
window / shift on ties), so fitting is deterministic. Windows and shifts are
stored in seconds (``frames / fps``) and converted back with the frame rate
of the data they are applied to (nearest odd window, nearest whole shift).

Masks (True = keep, e.g. face found) exclude frames from the statistics
(CCC, means, standard deviations); filtering and shifting use every frame.
A mask refers to the frame's position in time, before and after a shift.

The module also reads and writes the per-file prediction CSVs of the
``test`` command (``time``, one column per output, optional ``face_found``;
``top_class`` for categorical models, which the reader skips) for the
``evaluate`` command.
"""
import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from scipy.ndimage import median_filter

from .ccc import _ccc_columns
from .errors import InputError
from .files import atomic_write_text, check_writable
from .labels import read_labels
from .metrics import evaluate_continuous

__all__ = [
    "MEDIAN_WINDOWS_S", "SHIFT_RANGE_S", "window_frames", "shift_frames",
    "apply_median", "apply_shift", "StepResult", "DimensionChain", "Chain",
    "SeriesFile", "read_prediction_csvs", "read_prediction_csv",
    "write_prediction_csv", "top_classes", "TOP_CLASS", "pair_with_labels", "fill_gaps",
    "fit_chain_from_csvs", "apply_chain_to_csvs", "common_fps", "atomic_write_text",
    "check_new_file",
]

MEDIAN_WINDOWS_S = tuple(float(w) for w in np.geomspace(0.04, 20.0, 40))
SHIFT_RANGE_S = (0.04, 10.0)
STEPS = ("median", "centre", "scale", "shift")
FORMAT = "end2you_visual.postprocess.Chain"
TOP_CLASS = "top_class"  # the class column of categorical prediction CSVs (text, not an output)


# ------------------------------------------------------------ the operations

def window_frames(window_s, fps):
    """Nearest odd number of frames (>= 1) to ``window_s * fps``."""
    x = float(window_s) * float(fps)
    return max(1, 2 * int(math.floor((x - 1.0) / 2.0 + 0.5)) + 1)


def shift_frames(shift_s, fps):
    """Nearest whole number of frames (>= 0) to ``shift_s * fps``."""
    return max(0, int(math.floor(float(shift_s) * float(fps) + 0.5)))


def apply_median(x, frames):
    """Median filter of a 1-D sequence, odd ``frames`` wide, edges repeated."""
    x = np.asarray(x, dtype=np.float64)
    if frames <= 1:
        return x.copy()
    return median_filter(x, size=int(frames), mode="nearest")


def apply_shift(x, frames):
    """``out[t] = x[t + frames]``; the last ``frames`` values repeat ``x[-1]``."""
    x = np.asarray(x, dtype=np.float64)
    k = int(frames)
    if k <= 0 or x.size == 0:
        return x.copy()
    out = np.empty_like(x)
    k = min(k, x.size)
    out[: x.size - k] = x[k:]
    out[x.size - k:] = x[-1]
    return out


# ----------------------------------------------------------------- the chain

@dataclass
class StepResult:
    """One row of the table: validation CCC before the step and with the
    step's best setting (``value``: window s, bias, scale ratio or shift s;
    None when the step could not be tried)."""
    step: str
    value: Optional[float]
    ccc_before: float
    ccc_after: float
    kept: bool


@dataclass
class DimensionChain:
    """The kept steps of one output dimension (None = step not kept)."""
    name: str
    median_window_s: Optional[float] = None
    bias: Optional[float] = None
    scale: Optional[float] = None
    scale_center: Optional[float] = None
    shift_s: Optional[float] = None
    steps: List[StepResult] = field(default_factory=list)

    def apply(self, series, fps):
        """Apply to a list of per-file 1-D arrays; returns new arrays."""
        out = [np.asarray(x, dtype=np.float64) for x in series]
        if self.median_window_s is not None:
            n = window_frames(self.median_window_s, fps)
            out = [apply_median(x, n) for x in out]
        if self.bias is not None:
            out = [x + self.bias for x in out]
        if self.scale is not None:
            out = [self.scale_center + (x - self.scale_center) * self.scale for x in out]
        if self.shift_s is not None:
            k = shift_frames(self.shift_s, fps)
            out = [apply_shift(x, k) for x in out]
        return out


class _Validation:
    """Validation labels of one dimension and the pooled CCC of candidates."""

    def __init__(self, labels, masks):
        self.masks = masks
        self.gt = np.concatenate([y[m] for y, m in zip(labels, masks)])

    def pooled(self, series):
        return np.concatenate([x[m] for x, m in zip(series, self.masks)])

    def ccc(self, series):
        p = self.pooled(series)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(_ccc_columns(p[:, None], self.gt[:, None])[0])
        return value if math.isfinite(value) else -math.inf


def _search(val, series, candidates, op):
    """(best candidate, its CCC, its series); first best wins ties."""
    best = (None, -math.inf, None)
    for c in candidates:
        out = [op(x, c) for x in series]
        score = val.ccc(out)
        if score > best[1]:
            best = (c, score, out)
    return best


def _fit_dimension(name, series, labels, masks, fps, windows_s, shift_range_s, min_gain):
    val = _Validation(labels, masks)
    dim = DimensionChain(name=name)
    current = val.ccc(series)

    def record(step, value, score, out):
        nonlocal current, series
        kept = value is not None and score > current + min_gain
        dim.steps.append(StepResult(step, value, _finite(current), _finite(score), kept))
        if kept:
            current, series = score, out
        return kept

    # (a) median filter
    frames = sorted({window_frames(w, fps) for w in windows_s} - {1})
    n, score, out = _search(val, series, frames, apply_median)
    if record("median", None if n is None else n / fps, score, out):
        dim.median_window_s = n / fps
    # (b) centring
    bias = float(val.gt.mean() - val.pooled(series).mean())
    out = [x + bias for x in series]
    if record("centre", bias, val.ccc(out), out):
        dim.bias = bias
    # (c) scaling around the prediction mean
    p = val.pooled(series)
    centre, sd = float(p.mean()), float(p.std())
    if sd > 0:
        ratio = float(val.gt.std()) / sd
        out = [centre + (x - centre) * ratio for x in series]
        if record("scale", ratio, val.ccc(out), out):
            dim.scale, dim.scale_center = ratio, centre
    else:
        record("scale", None, current, series)
    # (d) forward time shift
    lo, hi = shift_range_s
    shifts = range(max(1, shift_frames(lo, fps)), shift_frames(hi, fps) + 1)
    k, score, out = _search(val, series, shifts, apply_shift)
    if record("shift", None if k is None else k / fps, score, out):
        dim.shift_s = k / fps
    return dim


def _finite(x):
    return float(x) if math.isfinite(x) else math.nan


def _check_fit_inputs(preds, labels, masks, fps):
    preds = [np.asarray(p, dtype=np.float64) for p in preds]
    labels = [np.asarray(y, dtype=np.float64) for y in labels]
    if not preds:
        raise InputError(None, "no validation predictions given")
    if len(preds) != len(labels):
        raise InputError(None, f"{len(preds)} prediction files but {len(labels)} label files")
    preds = [p[:, None] if p.ndim == 1 else p for p in preds]
    labels = [y[:, None] if y.ndim == 1 else y for y in labels]
    masks = [None] * len(preds) if masks is None else list(masks)
    if len(masks) != len(preds):
        raise InputError(None, f"{len(masks)} masks for {len(preds)} files")
    out_masks = []
    for i, (p, y, m) in enumerate(zip(preds, labels, masks)):
        where = f"file {i}"
        if p.ndim != 2 or p.shape != y.shape:
            raise InputError(None, f"{where}: predictions {p.shape} and labels {y.shape} "
                                   "must both be (T, D) of equal shape")
        if p.shape[0] == 0:
            raise InputError(None, f"{where}: empty sequence")
        if not np.isfinite(p).all():
            raise InputError(None, f"{where}: predictions contain NaN (fill gaps first, "
                                   "see fill_gaps)")
        m = np.ones(p.shape[0], bool) if m is None else np.asarray(m, bool)
        if m.shape != (p.shape[0],):
            raise InputError(None, f"{where}: mask shape {m.shape}, expected ({p.shape[0]},)")
        if not np.isfinite(y[m]).all():
            raise InputError(None, f"{where}: labels contain NaN or infinity")
        out_masks.append(m)
    if len({p.shape[1] for p in preds}) != 1:
        raise InputError(None, "files differ in number of output dimensions")
    if not sum(int(m.sum()) for m in out_masks):
        raise InputError(None, "every validation frame is masked out")
    if not (fps > 0 and math.isfinite(fps)):
        raise InputError(None, f"frame rate must be positive, got {fps}")
    return preds, labels, out_masks


@dataclass
class Chain:
    """Post-processing chain: one :class:`DimensionChain` per output.

    ``Chain.fit(preds, labels, fps)`` searches it on validation data,
    ``chain.apply(preds, fps)`` applies it, ``to_json``/``from_json`` store
    it exactly (floats round-trip), ``table()`` prints the validation CCCs.
    """
    dimensions: List[DimensionChain]
    fps: float

    @property
    def names(self):
        return [d.name for d in self.dimensions]

    @classmethod
    def fit(cls, preds, labels, fps, names=None, masks=None,
            windows_s=MEDIAN_WINDOWS_S, shift_range_s=SHIFT_RANGE_S, min_gain=1e-9):
        """Search the chain on validation ``preds``/``labels``: lists of
        per-file (T_i, D) arrays (a (T_i,) array is D = 1) at ``fps`` frames
        per second. ``masks``: optional per-file (T_i,) booleans (True =
        frame counts in the statistics)."""
        fps = float(fps)
        preds, labels, masks = _check_fit_inputs(preds, labels, masks, fps)
        d = preds[0].shape[1]
        names = [f"dim{j}" for j in range(d)] if names is None else [str(n) for n in names]
        if len(names) != d:
            raise InputError(None, f"{len(names)} names for {d} output dimensions")
        dims = [
            _fit_dimension(names[j], [p[:, j] for p in preds], [y[:, j] for y in labels],
                           masks, fps, windows_s, shift_range_s, float(min_gain))
            for j in range(d)
        ]
        return cls(dimensions=dims, fps=fps)

    def apply(self, preds, fps):
        """Apply to a list of per-file (T_i, D) arrays at ``fps``; returns
        new float64 arrays of the same shapes."""
        out = []
        for i, p in enumerate(preds):
            p = np.asarray(p, dtype=np.float64)
            squeeze = p.ndim == 1
            p = p[:, None] if squeeze else p
            if p.ndim != 2 or p.shape[1] != len(self.dimensions):
                raise InputError(None, f"file {i}: predictions of shape {p.shape}, the chain "
                                       f"has {len(self.dimensions)} dimensions")
            cols = [dim.apply([p[:, j]], float(fps))[0] for j, dim in enumerate(self.dimensions)]
            q = np.stack(cols, axis=1)
            out.append(q[:, 0] if squeeze else q)
        return out

    def to_json(self):
        """A JSON string from which :meth:`from_json` rebuilds an equal chain."""
        return json.dumps({"format": FORMAT, "version": 1, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text, path=None):
        """Rebuild a chain from :meth:`to_json` output (``path`` for errors)."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise InputError(path, "not a post-processing chain file")
            dims = []
            for d in data["dimensions"]:
                d = dict(d)
                d["steps"] = [StepResult(**s) for s in d.get("steps", [])]
                dims.append(DimensionChain(**d))
            return cls(dimensions=dims, fps=float(data["fps"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(path, f"cannot read chain: {error}") from error

    def save(self, path):
        """Write the JSON atomically."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(path, f"cannot read chain: {error}") from error
        return cls.from_json(text, path=path)

    def table(self):
        """The validation CCC before and after each step, as text."""
        lines = [f"{'output':<12} {'step':<7} {'setting':>14} {'CCC before':>10} "
                 f"{'CCC after':>10}  kept"]
        for dim in self.dimensions:
            for s in dim.steps:
                lines.append(f"{dim.name:<12} {s.step:<7} {_setting(s):>14} "
                             f"{s.ccc_before:>10.4f} {s.ccc_after:>10.4f}  "
                             f"{'yes' if s.kept else 'no'}")
        return "\n".join(lines)


def _setting(step):
    if step.value is None:
        return "n/a"
    if step.step in ("median", "shift"):
        return f"{step.value:.2f} s"
    return f"{step.value:+.4g}" if step.step == "centre" else f"x{step.value:.4g}"


# -------------------------------------------------------------- file handling

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
    def stem(self):
        return self.path.stem

    @property
    def fps(self):
        """Frames per second from the time column: (T - 1) / duration,
        rounded to 6 decimals (so 0.04 s steps give exactly 25.0)."""
        return round((len(self.time) - 1) / float(self.time[-1] - self.time[0]), 6)


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def read_prediction_csv(path, outputs=None):
    """Read a per-file prediction CSV: a header with ``time``, the output
    columns and optionally ``face_found`` (1/0, true/false) and ``top_class``
    (skipped). ``outputs`` selects output columns (default: all other
    columns). Empty output cells
    read as NaN. Times must strictly increase with a near-constant step (no
    skipped frames: every step within half the median step of it)."""
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
        if face_col:
            face[i] = _flag(path, line, r[header.index(face_col)])
    _check_uniform_time(path, time)
    return SeriesFile(path=path, time=time, names=names, values=values, face_found=face)


def _number(path, line, column, cell, allow_empty):
    cell = cell.strip()
    if allow_empty and cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise InputError(path, f"row {line}, column {column!r}: {cell!r} is not a number") from None


def _flag(path, line, cell):
    c = cell.strip().lower()
    if c in _TRUE:
        return True
    if c in _FALSE:
        return False
    raise InputError(path, f"row {line}, column 'face_found': {cell!r} is not 0/1")


def _check_uniform_time(path, time):
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


def _csv_paths(paths):
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.csv"))
            if not found:
                raise InputError(p, "folder holds no .csv files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(p, "no such file or folder")
    if not out:
        raise InputError(None, "no CSV files given")
    stems = [p.stem for p in out]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(None, f"several CSV files share the stem(s) {dup}")
    return out


def read_prediction_csvs(paths, outputs=None):
    """Read prediction CSVs from files and/or folders (``*.csv``, sorted);
    returns a list of :class:`SeriesFile`. All files must have the same
    output columns. Stems must be unique."""
    files = [read_prediction_csv(p, outputs) for p in _csv_paths(paths)]
    for f in files[1:]:
        if f.names != files[0].names:
            raise InputError(f.path, f"output columns {f.names} differ from "
                                     f"{files[0].names} in {files[0].path}")
    return files


def pair_with_labels(preds, label_paths):
    """Label arrays (T_i, D) for each :class:`SeriesFile` in ``preds``,
    read from the label CSV of the same stem (files and/or folders) with the
    prediction output names as label columns (first column = time, see
    :func:`end2you_visual.labels.read_labels`). Row times must match the
    prediction times within half a frame; extra label files are ignored."""
    by_stem = {p.stem: p for p in _csv_paths(label_paths)}
    missing = [f.stem for f in preds if f.stem not in by_stem]
    if missing:
        raise InputError(None, f"no label CSV for prediction file(s) {missing}")
    out = []
    for f in preds:
        track = read_labels(by_stem[f.stem], label_columns=f.names)
        half = 0.5 / f.fps
        if len(track.times) != len(f.time) or np.abs(track.times - f.time).max() > half:
            raise InputError(track.path, f"label times ({len(track.times)} rows) do not match "
                                         f"the prediction times of {f.path} ({len(f.time)} rows)")
        out.append(np.asarray(track.values, dtype=np.float64))
    return out


def fill_gaps(values):
    """Fill NaN rows of a (T, D) array per column by holding the last valid
    value (the first valid value before it); all-NaN columns raise."""
    values = np.array(values, dtype=np.float64)
    for j in range(values.shape[1]):
        col = values[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            raise InputError(None, f"output column {j} has no valid prediction")
        idx = np.where(ok, np.arange(col.size), 0)
        np.maximum.accumulate(idx, out=idx)
        idx[: int(np.argmax(ok))] = int(np.argmax(ok))
        values[:, j] = col[idx]
    return values


def common_fps(files, tolerance=1e-3):
    """The frame rate shared by ``files`` (relative ``tolerance``)."""
    rates = [f.fps for f in files]
    ref = float(np.median(rates))
    for f, r in zip(files, rates):
        if abs(r - ref) > tolerance * ref:
            raise InputError(f.path, f"frame rate {r:.4f} differs from the others' {ref:.4f}")
    return ref


def _masks(files):
    return [np.ones(len(f.time), bool) if f.face_found is None else f.face_found for f in files]


def _filled(f):
    try:
        return fill_gaps(f.values)
    except InputError as error:
        raise InputError(f.path, error.problem) from None


def fit_chain_from_csvs(pred_paths, label_paths, outputs=None, **fit_args):
    """Fit a :class:`Chain` on validation prediction and label CSVs.

    Frames without a face (``face_found`` 0) are left out of the statistics;
    empty prediction cells are filled by :func:`fill_gaps` before filtering.
    Returns ``(chain, before, after)``: the chain and the validation
    :class:`~end2you_visual.metrics.ContinuousReport` before and after it.
    """
    files = read_prediction_csvs(pred_paths, outputs)
    labels = pair_with_labels(files, label_paths)
    fps = common_fps(files)
    preds = [_filled(f) for f in files]
    masks = _masks(files)
    chain = Chain.fit(preds, labels, fps, names=files[0].names, masks=masks, **fit_args)
    stems = [f.stem for f in files]
    before = evaluate_continuous(preds, labels, chain.names, masks, stems)
    after = evaluate_continuous(chain.apply(preds, fps), labels, chain.names, masks, stems)
    return chain, before, after


def top_classes(values, names, face_found=None):
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


def write_prediction_csv(path, time, names, values, face_found=None, top_class=False):
    """Write a prediction CSV (``time``, outputs, optional ``face_found``,
    with ``top_class`` a :data:`TOP_CLASS` column of :func:`top_classes`)
    atomically; floats are written with ``repr`` precision."""
    lines = [",".join(["time", *names] + (["face_found"] if face_found is not None else [])
                      + ([TOP_CLASS] if top_class else []))]
    tops = top_classes(values, names, face_found) if top_class else None
    for i in range(len(time)):
        cells = [repr(float(time[i]))] + [repr(float(v)) for v in values[i]]
        if face_found is not None:
            cells.append("1" if face_found[i] else "0")
        if top_class:
            cells.append(tops[i])
        lines.append(",".join(cells))
    atomic_write_text(path, "\n".join(lines) + "\n")


def check_new_file(path, option="--out", overwrite=False):
    """Refuse a file output that cannot be written, or that exists (a finished
    output is never replaced unless ``overwrite``).

    Raises:
        InputError: naming ``option``, the file and ``--overwrite``.
    """
    check_writable(path, option, folder=False)
    if Path(path).exists() and not overwrite:
        raise InputError(f"{option} {path}", "already exists; use --overwrite to replace it, "
                                             "or choose another name")


def apply_chain_to_csvs(chain, pred_paths, out_dir, label_paths=None, overwrite=False):
    """Apply ``chain`` to prediction CSVs and write them, same stems, under
    ``out_dir``. The output columns are the chain's names. Returns
    ``(written_paths, before, after)``; ``before``/``after`` are
    :class:`~end2you_visual.metrics.ContinuousReport` when ``label_paths``
    is given, else None.

    Raises:
        InputError: ``out_dir`` cannot be written, or already holds a CSV of
            one of these stems (unless ``overwrite``; never an input file).
    """
    check_writable(out_dir, "--out")
    files = read_prediction_csvs(pred_paths, chain.names)
    out_dir = Path(out_dir)
    targets = [out_dir / f"{f.stem}.csv" for f in files]
    for f, path in zip(files, targets):
        if path.resolve() == f.path.resolve():
            raise InputError(path, "output would overwrite its input; choose another folder")
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(f"--out {out_dir}", f"already holds {', '.join(existing[:3])}"
                         + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
                         + "; use --overwrite to replace them, or choose another folder")
    labels = None if label_paths is None else pair_with_labels(files, label_paths)
    preds = [_filled(f) for f in files]
    posts = [chain.apply([p], f.fps)[0] for p, f in zip(preds, files)]
    for f, path, q in zip(files, targets, posts):
        write_prediction_csv(path, f.time, f.names, q, f.face_found)
    if labels is None:
        return targets, None, None
    masks, stems = _masks(files), [f.stem for f in files]
    before = evaluate_continuous(preds, labels, chain.names, masks, stems)
    after = evaluate_continuous(posts, labels, chain.names, masks, stems)
    return targets, before, after
