"""MTCNN's last stage on a tracked face: O-Net refines where the face is
expected, instead of the whole cascade searching the frame.

facenet-pytorch's ``detect_face`` searches whole images for faces of any
size: a P-Net pyramid, then every candidate cut and resized for R-Net and
O-Net one at a time in a Python loop. Most of that finds candidate boxes.
Around a tracked face the candidate is known: where the track expects the
face. :func:`refine_boxes` gives O-Net that box at three sizes, as MTCNN
gives it R-Net's boxes (squared, cut from the frame, clipped to it, resized
to 48 x 48 by averaging), and returns what MTCNN's last stage returns for
the most probable: the face probability, the regressed box and the five
landmarks. The candidates of a batch of frames go through O-Net in one
call, on channels-last tensors (two to four times faster on a CPU:
:func:`channels_last`).

O-Net regresses boxes that overlap a face by more than about two thirds
onto it (its positive training crops): a face that moved or changed size
more than that, or that is gone, comes back with a low probability, and
the caller searches the whole frame (:mod:`end2you_visual.tracking`).
"""
from __future__ import annotations

from typing import Sequence, Tuple, TypeVar, Union

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

__all__ = ["channels_last", "refine_boxes"]

# O-Net's input side, in pixels.
_ONET_PIXELS = 48

_Module = TypeVar("_Module", bound=nn.Module)


def channels_last(mtcnn: _Module) -> _Module:
    """Put facenet-pytorch ``MTCNN``'s networks in channels-last memory
    format (in place; the same weights) and return it. Its convolutions and
    max-pools then run several times faster on a CPU; results are the same
    to float rounding."""
    return mtcnn.to(memory_format=torch.channels_last)


def refine_boxes(frames: np.ndarray, boxes: npt.ArrayLike, onet: nn.Module,
                 device: Union[str, torch.device] = "cpu",
                 scales: Sequence[float] = (0.9, 1.0, 1.1)
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """O-Net on one expected face box per frame, at a few scales.

    Args:
        frames: uint8 (n, H, W, 3), RGB.
        boxes: float (n, 4) ``x1, y1, x2, y2`` in pixels: where each
            frame's face is expected. Each is scaled by each of ``scales``
            about its centre and made square (side max(w, h), same centre),
            as MTCNN squares its candidates: O-Net sees n x len(scales)
            candidates, as in MTCNN several candidates overlap each face.
        onet: facenet-pytorch's ``ONet`` (``MTCNN.onet``).
        device: where O-Net runs.
        scales: the candidates' sizes, relative to the expected box.

    Returns:
        ``(boxes, probs, points)``: float32 numpy arrays (n, 4) regressed
        boxes, (n,) face probabilities and (n, 5, 2) landmarks ``x, y``
        (MTCNN's order), in frame pixels, of each frame's most probable
        candidate, as MTCNN's last stage computes them (before its
        threshold).
    """
    from facenet_pytorch.models.utils.detect_face import bbreg, pad, rerec

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                np.zeros((0, 5, 2), np.float32))
    squares = rerec(torch.from_numpy(np.concatenate([_scaled(boxes, s) for s in scales])))
    y, ey, x, ex = pad(squares, frames.shape[2], frames.shape[1])  # MTCNN's integer boxes
    crops = torch.stack([_cut(frames[k % n][y[k] - 1:ey[k], x[k] - 1:ex[k]], device)
                         for k in range(len(squares))])
    with torch.no_grad():
        x = ((crops - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)
        regression, marks, probs = (t.float().cpu() for t in onet(x))
    points = _landmarks(squares, marks)
    found = bbreg(squares.clone(), regression)
    probs = probs[:, 1].numpy()
    best = probs.reshape(len(scales), n).argmax(axis=0) * n + np.arange(n)
    return (found.numpy()[best].astype(np.float32), probs[best].astype(np.float32),
            points[best].astype(np.float32))


def _scaled(boxes: np.ndarray, scale: float) -> np.ndarray:
    """Boxes (m, 4) scaled by ``scale`` about their centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _cut(pixels: np.ndarray, device: Union[str, torch.device]) -> torch.Tensor:
    """MTCNN's input for O-Net from a candidate's ``pixels`` (h, w, 3) uint8
    (its integer box, clipped to the frame): float (3, 48, 48), resized as
    MTCNN resizes (``imresample``: ``area``, averaging)."""
    from facenet_pytorch.models.utils.detect_face import imresample

    if pixels.shape[0] == 0 or pixels.shape[1] == 0:  # wholly outside: nothing to see
        return torch.zeros((3, _ONET_PIXELS, _ONET_PIXELS), device=device)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(2, 0, 1)[None]
    return imresample(x.float(), (_ONET_PIXELS, _ONET_PIXELS))[0]


def _landmarks(squares: torch.Tensor, marks: torch.Tensor) -> np.ndarray:
    """O-Net's landmark outputs (m, 10), relative to its input boxes
    ``squares`` (m, 4), in frame pixels (m, 5, 2), as MTCNN maps them."""
    w = (squares[:, 2] - squares[:, 0] + 1)[:, None]
    h = (squares[:, 3] - squares[:, 1] + 1)[:, None]
    return torch.stack([w * marks[:, :5] + squares[:, :1] - 1,
                        h * marks[:, 5:] + squares[:, 1:2] - 1], dim=2).numpy()
