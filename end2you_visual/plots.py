"""PNG figures of predictions and confusion matrices.

Matplotlib's Agg canvas is used directly (no pyplot, no display, no global
backend switch). Files are written atomically: a temporary file in the same
folder, then ``os.replace``.
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import InputError
from .files import atomic_file

__all__ = ["plot_predictions", "plot_confusion"]


def _save(fig, path):
    FigureCanvasAgg(fig)
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    return Path(path)


def _columns(a, t, what):
    a = np.asarray(a, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[0] != t:
        raise InputError(None, f"{what} must be ({t},) or ({t}, D), got shape {a.shape}")
    return a


def plot_predictions(times, preds, labels, names, path, face_found=None):
    """One panel per output dimension: predictions (and ground truth, unless
    ``labels`` is None) against time in seconds. Where ``face_found`` is
    False the prediction line has a gap and the background is shaded.
    Returns the written path."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise InputError(None, f"times must be a non-empty 1-D array, got shape {times.shape}")
    preds = _columns(preds, times.size, "predictions")
    labels = None if labels is None else _columns(labels, times.size, "labels")
    names = list(names)
    if len(names) != preds.shape[1] or (labels is not None and labels.shape != preds.shape):
        raise InputError(None, f"{len(names)} names, predictions {preds.shape}, labels "
                               f"{None if labels is None else labels.shape}: they must agree")
    face = None if face_found is None else np.asarray(face_found, bool)
    if face is not None and face.shape != times.shape:
        raise InputError(None, f"face_found must be {times.shape}, got {face.shape}")
    shown = preds if face is None else np.where(face[:, None], preds, np.nan)
    fig = Figure(figsize=(10, 2.2 * len(names) + 0.6))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for j, (ax, name) in enumerate(zip(axes, names)):
        if labels is not None:
            ax.plot(times, labels[:, j], color="0.25", lw=1.2, label="ground truth")
        ax.plot(times, shown[:, j], color="tab:blue", lw=1.0, label="prediction")
        if face is not None and not face.all():
            ax.fill_between(times, 0, 1, where=~face, transform=ax.get_xaxis_transform(),
                            color="tab:red", alpha=0.12, lw=0, label="no face")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix, class_names, path):
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


def plot_training_curves(logs, metric, path, labels=None, seconds=True):
    """Validation ``metric`` per epoch from one or more training ``log.csv`` files.

    Several logs are drawn one after another (a run continued from another's
    checkpoint), epochs numbered across them; with ``seconds`` the top axis
    tells the cumulative training time. Writes a PNG atomically.
    """
    import csv

    column, epochs, values, times, spans = f"valid_{metric}", [], [], [], []
    for k, log in enumerate(logs):
        with open(log, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or column not in rows[0]:
            raise InputError(log, f"no {column!r} column in this training log")
        start = len(epochs)
        for row in rows:
            epochs.append(len(epochs) + 1)
            values.append(float(row[column]))
            elapsed = float(row.get("train_seconds") or 0) + float(row.get("valid_seconds") or 0)
            times.append((times[-1] if times else 0.0) + elapsed)
        spans.append((start, len(epochs), labels[k] if labels else Path(log).parent.name))
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for start, stop, label in spans:
        ax.plot(epochs[start:stop], values[start:stop], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    if len(spans) > 1:
        ax.legend()
    if seconds:
        ax.set_title(f"{times[-1] / 60:.0f} min in all", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
