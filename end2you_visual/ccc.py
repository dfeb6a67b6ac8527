"""The concordance correlation coefficient (CCC), in NumPy and as a torch loss.

    rho_c = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

Variances and the covariance are *population* (biased, 1/N) statistics, as in
Lin (1989) and the AVEC challenges' scripts. With 1/N throughout, rho_c equals
``1 - mean((x - y)^2) / (var(x) + var(y) + (mean(x) - mean(y))^2)``, so it
is 1 exactly when x == y and never exceeds 1 in absolute value.

Constant sequences: if one of x, y is constant and the other is not, the
covariance is 0 and rho_c = 0. If both are constant, the formula is 0/0
unless the constants differ; :func:`ccc` returns 0.0 when the constants
differ and NaN when they are equal (agreement is undefined, not perfect).
The loss adds ``eps`` to the denominator instead, so a sequence whose
prediction and target are both constant scores rho_c = 0 (loss 1) and gives
no gradient.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .errors import InputError

__all__ = ["ccc", "ccc_per_column", "ccc_columns", "ccc_loss"]

if TYPE_CHECKING:  # torch is imported by ccc_loss only
    import torch


def _as_pair(x: npt.ArrayLike, y: npt.ArrayLike, ndim: int
             ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != ndim or y.ndim != ndim:
        raise InputError(None, f"CCC needs {ndim}-D arrays, got shapes {x.shape} and {y.shape}")
    if x.shape != y.shape:
        raise InputError(None, f"CCC needs equal shapes, got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise InputError(None, "CCC of empty input")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(None, "CCC input contains NaN or infinity")
    return x, y


def ccc_columns(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
                ) -> npt.NDArray[np.float64]:
    """CCC of each column of two finite (T, D) float64 arrays, unchecked
    (NaN where both are the same constant): the fast path for callers that
    checked their inputs (metrics, the post-processing search)."""
    mx, my = x.mean(axis=0), y.mean(axis=0)
    dx, dy = x - mx, y - my
    vx = (dx * dx).mean(axis=0)
    vy = (dy * dy).mean(axis=0)
    cov = (dx * dy).mean(axis=0)
    den = vx + vy + (mx - my) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 2.0 * cov / den
    return np.where(den > 0, out, np.nan)


def ccc(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """CCC of two equal-length 1-D sequences, as a Python float (float64 maths).

    Raises :class:`InputError` for different lengths, empty input or NaN.
    Returns NaN only when x and y are the same constant (see module doc).
    """
    x, y = _as_pair(x, y, 1)
    return float(ccc_columns(x[:, None], y[:, None])[0])


def ccc_per_column(x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """CCC of each column of two (T, D) arrays; returns a float64 array (D,)."""
    x, y = _as_pair(x, y, 2)
    return ccc_columns(x, y)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             eps: float = 1e-8) -> torch.Tensor:
    """Mean of (1 - CCC) over sequences and output dimensions.

    ``pred`` and ``target`` are (B, T, D) tensors. The CCC is computed for
    each batch element over its own time axis and for each dimension, never
    over the flattened batch; the loss is the mean over sequences and
    dimensions of ``1 - rho_c``. ``mask`` (B, T), boolean, True = use the
    frame, excludes frames (padding, no face) from every statistic.
    Sequences without any valid frame are left out of the mean; if no
    sequence has one, the loss is 0 (still attached to the graph).

    Maths is float32 (float64 inputs stay float64), also under bf16 autocast.
    ``eps`` is added to the denominator, so constant sequences give finite
    values (see module doc).
    """
    import torch  # here, so that metrics and post-processing load without torch

    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"ccc_loss needs pred and target of equal shape (B, T, D), "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x = pred.to(dtype)
        y = target.to(dtype)
        if mask is None:
            w = torch.ones(x.shape[:2], dtype=dtype, device=x.device)
        else:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask must be (B, T) = {tuple(x.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
            w = mask.to(device=x.device, dtype=dtype)
        w = w.unsqueeze(-1)                                  # (B, T, 1)
        n = w.sum(dim=1)                                     # (B, 1)
        valid = n.squeeze(-1) > 0                            # (B,)
        n = n.clamp(min=1.0)
        # Masked frames may hold anything (even NaN): zero them, not multiply.
        x = torch.where(w > 0, x, torch.zeros_like(x))
        y = torch.where(w > 0, y, torch.zeros_like(y))
        mx = (w * x).sum(dim=1) / n                          # (B, D)
        my = (w * y).sum(dim=1) / n
        dx = (x - mx.unsqueeze(1)) * w
        dy = (y - my.unsqueeze(1)) * w
        vx = (dx * dx).sum(dim=1) / n
        vy = (dy * dy).sum(dim=1) / n
        cov = (dx * dy).sum(dim=1) / n
        rho = 2.0 * cov / (vx + vy + (mx - my) ** 2 + eps)  # (B, D)
        # Mean over valid sequences without a host sync (no `if valid.any()`).
        keep = valid.to(dtype).unsqueeze(-1)                 # (B, 1)
        total = ((1.0 - rho) * keep).sum()
        return total / (keep.sum() * rho.shape[-1]).clamp(min=1.0)
