"""PNG figures of predictions and confusion matrices.

Matplotlib's Agg canvas is used directly (no pyplot, no display, no global
backend switch). Files are written atomically: a temporary file in the same
folder, then ``os.replace``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import InputError
from .files import atomic_file

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import LineCollection
    from matplotlib.legend import Legend

__all__ = ["plot_predictions", "prediction_figure", "plot_confusion", "plot_timeline", "CATEGORICAL"]

PathLike = Union[str, "os.PathLike[str]"]


def _save(fig: Figure, path: PathLike) -> Path:
    FigureCanvasAgg(fig)
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    return Path(path)


def _columns(a: ArrayLike, t: int, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[0] != t:
        raise InputError(None, f"{what} must be ({t},) or ({t}, D), got shape {a.shape}")
    return a


CATEGORICAL = ("multiclass", "multilabel")
_STRIP_PT = 16  # height (points) of a class strip above a categorical panel


def _colours(n: int) -> List[Tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def plot_predictions(times: ArrayLike, preds: ArrayLike, labels: Optional[ArrayLike],
                     names: Sequence[str], path: PathLike,
                     face_found: Optional[ArrayLike] = None, title: Optional[str] = None,
                     kind: str = "regression") -> Path:
    """Write :func:`prediction_figure` as a PNG (atomically); returns the path."""
    return _save(prediction_figure(times, preds, labels, names, face_found, title, kind), path)


def prediction_figure(times: ArrayLike, preds: ArrayLike, labels: Optional[ArrayLike],
                      names: Sequence[str], face_found: Optional[ArrayLike] = None,
                      title: Optional[str] = None, kind: str = "regression") -> Figure:
    """Predictions (and ground truth, unless ``labels`` is None) against time.

    Regression outputs (``kind`` ``"regression"`` or ``"continuous"``): one
    panel per output, its y axis labelled with the output's name. Categorical
    outputs (``"multiclass"``: stacked class probabilities; ``"multilabel"``:
    one line per label): ONE panel on a shared 0-1 probability axis, with a
    strip above it marking the top class of every frame (and, with labels,
    a strip of the true class, or dashed 0/1 lines for multilabel). Where
    ``face_found`` is False the outputs have a gap and the background is
    shaded. ``title`` (e.g. the video and the model) goes on top; the legend
    sits to the right of the panels, off the curves. A one-frame sequence
    is drawn as single points (a stacked bar for multiclass) on an axis one
    second wide around its time.

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` (not drawn on screen).
    """
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise InputError(None, f"times must be a non-empty 1-D array, got shape {t.shape}")
    values = _columns(preds, t.size, "predictions")
    truth = None if labels is None else _columns(labels, t.size, "labels")
    names = list(names)
    if len(names) != values.shape[1] or (truth is not None and truth.shape != values.shape):
        raise InputError(None, f"{len(names)} names, predictions {values.shape}, labels "
                               f"{None if truth is None else truth.shape}: they must agree")
    face = None if face_found is None else np.asarray(face_found, bool)
    if face is not None and face.shape != t.shape:
        raise InputError(None, f"face_found must be {t.shape}, got {face.shape}")
    if kind not in ("regression", "continuous") + CATEGORICAL:
        raise ValueError(f"kind must be regression, continuous, multiclass or multilabel, "
                         f"not {kind!r}")
    shown = values if face is None else np.where(face[:, None], values, np.nan)
    if kind in CATEGORICAL:
        fig = _categorical_figure(t, shown, truth, names, face, title, kind)
    else:
        fig = _continuous_figure(t, shown, truth, names, face, title)
    return fig


def _shade_no_face(ax: Axes, times: np.ndarray, face: Optional[np.ndarray]) -> None:
    if face is not None and not face.all():
        ax.fill_between(times, 0, 1, where=~face, transform=ax.get_xaxis_transform(),
                        color="0.5", alpha=0.18, lw=0, label="no face")


def _legend(ax: Axes, **kwargs: Any) -> Legend:
    """The legend to the right of ``ax``, outside the plotting area."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                     fontsize="small", **kwargs)


def _point(times: np.ndarray) -> Dict[str, Any]:
    """Line style keywords: a marker at each value of a one-frame sequence
    (a line through one point draws nothing)."""
    return {"marker": "o"} if times.size == 1 else {}


def _x_range(times: np.ndarray) -> Tuple[float, float]:
    """The x limits: the frame times, or one step around a single frame."""
    if times.size == 1:
        return times[0] - 0.5 * _step(times), times[0] + 0.5 * _step(times)
    return times[0], times[-1]


def _continuous_figure(times: np.ndarray, shown: np.ndarray, labels: Optional[np.ndarray],
                       names: List[str], face: Optional[np.ndarray],
                       title: Optional[str]) -> Figure:
    fig = Figure(figsize=(11, 2.2 * len(names) + 0.8), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for j, (ax, name) in enumerate(zip(axes, names)):
        if labels is not None:
            ax.plot(times, labels[:, j], color="0.25", lw=1.2, label="ground truth",
                    **_point(times))
        ax.plot(times, shown[:, j], color="tab:blue", lw=1.0, label="prediction",
                **_point(times))
        _shade_no_face(ax, times, face)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_xlim(*_x_range(times))
    if title:
        axes[0].set_title(title)
    _legend(axes[0])
    axes[-1].set_xlabel("time (s)")
    return fig


def _runs(times: np.ndarray, index: np.ndarray) -> List[Tuple[float, float, int]]:
    """``(start, stop, value)`` of every run of equal ``index`` >= 0, in seconds
    (each frame spans half a step either side)."""
    step = _step(times)
    change = np.flatnonzero(np.diff(index)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [index.size]])
    return [(times[a] - step / 2, times[b - 1] + step / 2, int(index[a]))
            for a, b in zip(starts, stops) if index[a] >= 0]


def _strip(ax: Axes, times: np.ndarray, index: np.ndarray,
           colours: Sequence[Tuple[float, float, float, float]], level: int,
           text: str) -> LineCollection:
    """A strip ``level`` strips above ``ax``: the class ``index`` of each
    frame in its colour (-1: nothing). Returns the LineCollection."""
    from matplotlib.collections import LineCollection
    from matplotlib.transforms import ScaledTranslation, blended_transform_factory

    lift = ScaledTranslation(0, (level + 0.5) * _STRIP_PT / 72 + 2 / 72,
                             ax.figure.dpi_scale_trans)
    transform = blended_transform_factory(ax.transData, ax.transAxes) + lift
    runs = _runs(times, index)
    strip = LineCollection([[(a, 1.0), (b, 1.0)] for a, b, _ in runs],
                           colors=[colours[k] for *_, k in runs],
                           linewidths=_STRIP_PT - 4, capstyle="butt", transform=transform,
                           clip_on=False, label=f"_{text}")
    ax.add_collection(strip, autolim=False)
    ax.text(0.0, 1.0, f"{text} ", transform=ax.transAxes + lift, ha="right", va="center",
            fontsize="small")
    return strip


def _top(values: np.ndarray) -> np.ndarray:
    """Index of the largest finite value per row, -1 where none is finite."""
    finite = np.isfinite(values)
    top = np.where(finite, values, -np.inf).argmax(axis=1)
    return np.where(finite.any(axis=1), top, -1)


def _categorical_figure(times: np.ndarray, shown: np.ndarray, labels: Optional[np.ndarray],
                        names: List[str], face: Optional[np.ndarray], title: Optional[str],
                        kind: str) -> Figure:
    colours = _colours(len(names))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.subplots()
    if kind == "multiclass" and times.size == 1:  # a stackplot of one frame is empty
        bottoms = np.concatenate([[0.0], np.cumsum(shown[0])[:-1]])
        for j, name in enumerate(names):
            ax.bar(times, shown[0, j], bottom=bottoms[j], width=_step(times) / 2,
                   color=colours[j], alpha=0.85, label=name)
        ax.set_ylabel("class probability (stacked)")
    elif kind == "multiclass":
        ax.stackplot(times, shown.T, colors=colours, labels=names, alpha=0.85, lw=0)
        ax.set_ylabel("class probability (stacked)")
    else:
        for j, name in enumerate(names):
            ax.plot(times, shown[:, j], color=colours[j], lw=1.2, label=name, **_point(times))
        ax.axhline(0.5, color="0.3", lw=0.8, ls=":", label="threshold 0.5")
        ax.set_ylabel("label probability")
    strips = [_strip(ax, times, _top(shown), colours, 0, "top class")]
    if labels is not None and kind == "multiclass":
        strips.append(_strip(ax, times, _top(labels), colours, 1, "true class"))
    elif labels is not None:
        for j in range(len(names)):
            ax.plot(times, labels[:, j], color=colours[j], lw=0.9, ls="--", alpha=0.7,
                    drawstyle="steps-mid", label="ground truth (dashed)" if j == 0 else None,
                    **_point(times))
    _shade_no_face(ax, times, face)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(times[0] - 0.5 * _step(times), times[-1] + 0.5 * _step(times))
    ax.set_xlabel("time (s)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, pad=6 + _STRIP_PT * len(strips))
    _legend(ax)
    return fig


def _step(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if times.size > 1 else 1.0


def plot_confusion(matrix: ArrayLike, class_names: Sequence[str], path: PathLike) -> Path:
    """Confusion matrix (rows = true class, columns = predicted) with counts
    in the cells, coloured by row-normalised recall. Returns the path."""
    m = np.asarray(matrix, dtype=np.float64)
    names = list(class_names)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise InputError(None, f"matrix {m.shape} must be square with one row per class "
                               f"({len(names)} names)")
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = 1.0 + 0.6 * len(names)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of true class")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for k in range(len(names)):
            ax.text(k, i, f"{m[i, k]:g}", ha="center", va="center",
                    color="white" if norm[i, k] > 0.5 else "black", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_timeline(times: ArrayLike, found: Mapping[int, ArrayLike], path: PathLike,
                  title: Optional[str] = None) -> Path:
    """Who is visible when: one row per person, a bar over the frames where
    their face is found. ``found``: ``{person id: bool (T,)}``. Writes a
    PNG to ``path`` (atomically) and returns it."""
    times = np.asarray(times, np.float64)
    ids = sorted(found)
    fig = Figure(figsize=(11, 0.45 * max(len(ids), 1) + 1.2), layout="constrained")
    ax = fig.subplots()
    colours = _colours(max(len(ids), 1))
    step = _step(times) if times.size else 1.0
    for row, pid in enumerate(ids):
        seen = np.asarray(found[pid], bool)
        runs = _runs(times, np.where(seen, 0, -1))
        ax.broken_barh([(a, b - a) for a, b, _ in runs], (row - 0.35, 0.7),
                       color=colours[row % len(colours)])
    ax.set_yticks(range(len(ids)), [f"person {pid}" for pid in ids])
    ax.set_ylim(-0.6, max(len(ids), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(times[0] - step / 2 if times.size else 0, times[-1] + step / 2
                if times.size else 1)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)
