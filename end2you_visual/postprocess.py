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

Files of different frame rates are fitted and processed together: each
file's windows and shifts are turned into frames at its own rate. (The
``evaluate`` command's files: :mod:`end2you_visual.evaluation`.)
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union, cast

import numpy as np
import numpy.typing as npt
from scipy.ndimage import median_filter

from .ccc import ccc_columns
from .errors import InputError
from .files import atomic_write_text

__all__ = [
    "MEDIAN_WINDOWS_S", "SHIFT_RANGE_S", "window_frames", "shift_frames",
    "apply_median", "apply_shift", "StepResult", "DimensionChain", "Chain", "fill_gaps",
]

MEDIAN_WINDOWS_S = tuple(float(w) for w in np.geomspace(0.04, 20.0, 40))
SHIFT_RANGE_S = (0.04, 10.0)
STEPS = ("median", "centre", "scale", "shift")
FORMAT = "end2you_visual.postprocess.Chain"


# ------------------------------------------------------------ the operations

def window_frames(window_s: float, fps: float) -> int:
    """Nearest odd number of frames (>= 1) to ``window_s * fps``."""
    x = float(window_s) * float(fps)
    return max(1, 2 * int(math.floor((x - 1.0) / 2.0 + 0.5)) + 1)


def shift_frames(shift_s: float, fps: float) -> int:
    """Nearest whole number of frames (>= 0) to ``shift_s * fps``."""
    return max(0, int(math.floor(float(shift_s) * float(fps) + 0.5)))


def apply_median(x: npt.ArrayLike, frames: int) -> npt.NDArray[np.float64]:
    """Median filter of a 1-D sequence, odd ``frames`` wide, edges repeated."""
    x = np.asarray(x, dtype=np.float64)
    if frames <= 1:
        return x.copy()
    return median_filter(x, size=int(frames), mode="nearest")


def apply_shift(x: npt.ArrayLike, frames: int) -> npt.NDArray[np.float64]:
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

    def apply(self, series: Sequence[npt.ArrayLike], fps: Union[float, Sequence[float]]) -> list[npt.NDArray[np.float64]]:
        """Apply to a list of per-file 1-D arrays at ``fps`` (one rate, or
        one per file); returns new arrays."""
        out = [np.asarray(x, dtype=np.float64) for x in series]
        rates = _rates(fps, len(out))
        if self.median_window_s is not None:
            out = [apply_median(x, window_frames(self.median_window_s, r))
                   for x, r in zip(out, rates)]
        if self.bias is not None:
            out = [x + self.bias for x in out]
        if self.scale is not None:
            centre = cast(float, self.scale_center)  # set with scale
            out = [centre + (x - centre) * self.scale for x in out]
        if self.shift_s is not None:
            out = [apply_shift(x, shift_frames(self.shift_s, r)) for x, r in zip(out, rates)]
        return out


def _rates(fps: Any, n: int) -> list[float]:
    """``fps`` (one rate or one per file) as a list of ``n`` floats."""
    rates = [float(fps)] * n if np.ndim(fps) == 0 else [float(r) for r in fps]
    if len(rates) != n:
        raise InputError(None, f"{len(rates)} frame rates for {n} files")
    for r in rates:
        if not (r > 0 and math.isfinite(r)):
            raise InputError(None, f"frame rate must be positive, got {r}")
    return rates


class _Validation:
    """Validation labels of one dimension and the pooled CCC of candidates."""

    def __init__(self, labels: Sequence[npt.NDArray[np.float64]], masks: Sequence[npt.NDArray[np.bool_]]) -> None:
        self.masks = masks
        self.gt = np.concatenate([y[m] for y, m in zip(labels, masks)])

    def pooled(self, series: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        return np.concatenate([x[m] for x, m in zip(series, self.masks)])

    def ccc(self, series: Sequence[npt.NDArray[np.float64]]) -> float:
        p = self.pooled(series)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(ccc_columns(p[:, None], self.gt[:, None])[0])
        return value if math.isfinite(value) else -math.inf


def _search(val: _Validation, series: Sequence[npt.NDArray[np.float64]], candidates: Iterable[float],
            op: Callable[[npt.NDArray[np.float64], float, float], npt.NDArray[np.float64]], fps: Sequence[float]
            ) -> tuple[float | None, float, list[npt.NDArray[np.float64]] | None]:
    """(best candidate, its CCC, its series); first best wins ties."""
    best: tuple[float | None, float, list[npt.NDArray[np.float64]] | None] = (None, -math.inf, None)
    for c in candidates:
        out = [op(x, c, r) for x, r in zip(series, fps)]
        score = val.ccc(out)
        if score > best[1]:
            best = (c, score, out)
    return best


def _candidates(frames: Iterable[int], fps: Sequence[float],
                to_frames: Callable[[float, float], int]) -> list[float]:
    """Candidate settings in seconds: ``frames`` (at the highest rate ``r``
    of ``fps``) / r, dropping those that give every file the same frames
    as an earlier one (so one rate searches exactly ``frames``)."""
    top = max(fps)
    out: list[float] = []
    seen: set[tuple[int, ...]] = set()
    for n in frames:
        seconds = n / top
        key = tuple(to_frames(seconds, r) for r in fps)
        if key not in seen:
            seen.add(key)
            out.append(seconds)
    return out


def _fit_dimension(name: str, series: Sequence[npt.NDArray[np.float64]], labels: Sequence[npt.NDArray[np.float64]],
                   masks: Sequence[npt.NDArray[np.bool_]], fps: Sequence[float],
                   windows_s: Iterable[float], shift_range_s: tuple[float, float],
                   min_gain: float) -> DimensionChain:
    val = _Validation(labels, masks)
    r = max(fps)
    dim = DimensionChain(name=name)
    current = val.ccc(series)

    def record(step: str, value: float | None, score: float,
               out: Sequence[npt.NDArray[np.float64]] | None) -> bool:
        nonlocal current, series
        kept = value is not None and score > current + min_gain
        dim.steps.append(StepResult(step, value, _finite(current), _finite(score), kept))
        if kept:
            assert out is not None  # a value was tried: its series
            current, series = score, out
        return kept

    # (a) median filter: windows in seconds, each file's frames at its own rate
    windows = _candidates(sorted({window_frames(w, r) for w in windows_s} - {1}), fps,
                          window_frames)
    w, score, out = _search(val, series, windows,
                            lambda x, w, r: apply_median(x, window_frames(w, r)), fps)
    if record("median", w, score, out):
        dim.median_window_s = w
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
    shifts = _candidates(range(max(1, shift_frames(lo, r)), shift_frames(hi, r) + 1), fps,
                         shift_frames)
    k, score, out = _search(val, series, shifts,
                            lambda x, s, r: apply_shift(x, shift_frames(s, r)), fps)
    if record("shift", k, score, out):
        dim.shift_s = k
    return dim


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else math.nan


def _check_fit_inputs(preds: Sequence[Any], labels: Sequence[Any],
                      masks: Sequence[Any] | None
                      ) -> tuple[list[npt.NDArray[np.float64]], list[npt.NDArray[np.float64]], list[npt.NDArray[np.bool_]]]:
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
    return preds, labels, out_masks


@dataclass
class Chain:
    """Post-processing chain: one :class:`DimensionChain` per output.

    ``Chain.fit(preds, labels, fps)`` searches it on validation data,
    ``chain.apply(preds, fps)`` applies it, ``to_json``/``from_json`` store
    it exactly (floats round-trip), ``table()`` prints the validation CCCs.
    """
    dimensions: List[DimensionChain]
    fps: Union[float, List[float]]  # the validation data's frame rate, or one per file (a list) if they differ

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @classmethod
    def fit(cls, preds: Sequence[npt.ArrayLike], labels: Sequence[npt.ArrayLike], fps: Union[float, Sequence[float]],
            names: Sequence[str] | None = None,
            masks: Sequence[npt.ArrayLike | None] | None = None,
            windows_s: Iterable[float] = MEDIAN_WINDOWS_S,
            shift_range_s: tuple[float, float] = SHIFT_RANGE_S, min_gain: float = 1e-9
            ) -> Chain:
        """Search the chain on validation ``preds``/``labels``: lists of
        per-file (T_i, D) arrays (a (T_i,) array is D = 1) at ``fps`` frames
        per second (one rate, or one per file: each file's windows and shifts
        are counted in its own frames). ``masks``: optional per-file (T_i,) booleans (True =
        frame counts in the statistics)."""
        preds, labels, masks = _check_fit_inputs(preds, labels, masks)
        rates = _rates(fps, len(preds))
        d = preds[0].shape[1]
        names = [f"dim{j}" for j in range(d)] if names is None else [str(n) for n in names]
        if len(names) != d:
            raise InputError(None, f"{len(names)} names for {d} output dimensions")
        dims = [
            _fit_dimension(names[j], [p[:, j] for p in preds], [y[:, j] for y in labels],
                           masks, rates, windows_s, shift_range_s, float(min_gain))
            for j in range(d)
        ]
        return cls(dimensions=dims, fps=rates[0] if len(set(rates)) == 1 else rates)

    def apply(self, preds: Sequence[npt.ArrayLike], fps: Union[float, Sequence[float]]) -> list[npt.NDArray[np.float64]]:
        """Apply to a list of per-file (T_i, D) arrays at ``fps`` (one rate,
        or one per file); returns new float64 arrays of the same shapes."""
        out = []
        for i, (p, rate) in enumerate(zip(preds, _rates(fps, len(preds)))):
            p = np.asarray(p, dtype=np.float64)
            squeeze = p.ndim == 1
            p = p[:, None] if squeeze else p
            if p.ndim != 2 or p.shape[1] != len(self.dimensions):
                raise InputError(None, f"file {i}: predictions of shape {p.shape}, the chain "
                                       f"has {len(self.dimensions)} dimensions")
            cols = [dim.apply([p[:, j]], rate)[0] for j, dim in enumerate(self.dimensions)]
            q = np.stack(cols, axis=1)
            out.append(q[:, 0] if squeeze else q)
        return out

    def to_json(self) -> str:
        """A JSON string from which :meth:`from_json` rebuilds an equal chain."""
        return json.dumps({"format": FORMAT, "version": 1, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, path: str | os.PathLike[str] | None = None) -> Chain:
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
            fps = data["fps"]
            return cls(dimensions=dims,
                       fps=[float(r) for r in fps] if isinstance(fps, list) else float(fps))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(path, f"cannot read chain: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON atomically."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Chain:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(path, f"cannot read chain: {error}") from error
        return cls.from_json(text, path=path)

    def table(self) -> str:
        """The validation CCC before and after each step, as text."""
        lines = [f"{'output':<12} {'step':<7} {'setting':>14} {'CCC before':>10} "
                 f"{'CCC after':>10}  kept"]
        for dim in self.dimensions:
            for s in dim.steps:
                lines.append(f"{dim.name:<12} {s.step:<7} {_setting(s):>14} "
                             f"{s.ccc_before:>10.4f} {s.ccc_after:>10.4f}  "
                             f"{'yes' if s.kept else 'no'}")
        return "\n".join(lines)


def _setting(step: StepResult) -> str:
    if step.value is None:
        return "n/a"
    if step.step in ("median", "shift"):
        return f"{step.value:.2f} s"
    return f"{step.value:+.4g}" if step.step == "centre" else f"x{step.value:.4g}"


# ------------------------------------------------------------------- inputs

def fill_gaps(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
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
