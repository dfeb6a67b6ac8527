"""Square face crops: cutting them around face boxes or aligning them on the
face's landmarks, filling frames without a face, and resizing frames that
are already face crops.

:class:`FaceCropper` is the cropping part of the face pipeline
(:class:`~end2you_visual.faces.FacePipeline`; steps 5 and 6 of
:mod:`end2you_visual.faces`): it is built from its slice of the face
settings (``size``, ``margin``, ``crop``, ``fill``, and the ``device``),
checks them, and keeps the last good crop of each face it follows.

Two kinds of crop (``crop_kind``, the ``--crop`` option):

* ``"box"``: the square of side ``max(w, h) * (1 + margin)`` centred on the
  face box, axis-aligned (:meth:`FaceCropper.crop`).
* ``"aligned"``: the face's five landmarks (eyes, nose tip, mouth corners,
  as MTCNN gives them) mapped by a similarity transform (rotation, uniform
  scale, shift; least squares, no reflection: :func:`similarity_transform`)
  onto a canonical template, as face-analysis pipelines do
  (:meth:`FaceCropper.align`). The template is ArcFace's five points in a
  112 x 112 frame (:data:`TEMPLATE_112`: eyes level at y 51.6, 35.2 px
  apart). The margin enlarges that frame as it enlarges a box: the crop
  shows ``112 * (1 + margin)`` template units, the 112 x 112 frame in its
  centre (so it fills ``1 / (1 + margin)`` of the crop's side; margin 0 is
  ArcFace's crop exactly). The crop is then scaled to ``size``.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .choices import CROP_KINDS
from .devices import resolve_device
from .face_batch import FaceBatch
from .face_settings import check_setting

__all__ = ["CROP_KINDS", "TEMPLATE_112", "FaceCropper", "fill_missing", "pixels_around",
           "resize_only", "roi_align_crop", "roi_align_weights", "similarity_transform",
           "template_points", "weighted_crop"]

# ArcFace's canonical five points (left eye, right eye, nose tip, left and
# right mouth corners, as seen in the image: MTCNN's order) in a 112 x 112
# frame (insightface's arcface_dst).
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
# An aligned crop averages up to this many samples a side per output pixel
# when it shrinks the face (as roi_align does for box crops).
_MAX_SUPERSAMPLE = 8

# Frames converted to float at once when aligning, in pixels (x 3 channels x
# 4 bytes: about 200 MB), so a batch of 1080p frames is aligned in chunks.
_CROP_PIXEL_BUDGET = 1 << 24


class FaceCropper:
    """Square face crops of ``size`` x ``size`` pixels, cut around face boxes
    (``crop="box"``) or aligned on the five landmarks (``"aligned"``), and
    the fill of frames without the face (``fill``: ``"last"`` good crop, or
    ``"zeros"``).

    Args:
        size, margin, crop, fill: the face settings of those names
            (:class:`~end2you_visual.face_settings.FaceSettings`), checked
            here (InputError naming the option when out of range).
        device: where the crops are computed (``"cpu"``, ``"cuda"``...).

    State: the last good crop of each face (by the face's id), for
    ``fill="last"``; :meth:`reset` forgets it.
    """

    def __init__(self, size: int = 150, margin: float = 0.2, crop: str = "box",
                 fill: str = "last", device: Union[str, torch.device] = "cpu"):
        self.size = check_setting("size", size)
        self.margin = check_setting("margin", margin)
        self.crop_kind = check_setting("crop", crop)
        self.fill = check_setting("fill", fill)
        self.device = resolve_device(device)
        self._last_crops: Dict[int, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the last good crops (before the next video)."""
        self._last_crops = {}

    def cut_batch(self, frames: np.ndarray, batch: FaceBatch, face: int = 0) -> FaceBatch:
        """Fill ``batch.crops`` (in place) for the frames ``frames`` (n, H, W,
        3) of one face (``face``: its id, whose last good crop fills its
        no-face rows): :meth:`cut` where it is found, the fill elsewhere.
        Returns ``batch``."""
        if batch.crops.shape[1:] != (self.size, self.size, 3):  # a tracker's rows: not cut yet
            batch.crops = np.zeros((len(batch), self.size, self.size, 3), np.uint8)
        rows = np.flatnonzero(batch.found)
        if len(rows):
            landmarks = batch.landmarks if batch.landmarks is not None else \
                np.full((len(batch), 5, 2), np.nan, np.float32)
            batch.crops[rows] = self.cut(frames, batch.boxes[rows], landmarks[rows], rows=rows)
        last = fill_missing(batch.crops, batch.found, self._last_crops.get(face), self.fill)
        if last is not None:
            self._last_crops[face] = last
        return batch

    def square_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Face boxes (m, 4) -> the square crop regions (m, 4) cut around them."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + self.margin) / 2
        return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)

    def crop(self, frames: np.ndarray, boxes: np.ndarray,
             rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Cut square crops around face boxes, resized to size x size.

        Args:
            frames: uint8 (n, H, W, 3), RGB.
            boxes: (m, 4) face boxes ``x1, y1, x2, y2`` in pixels, one per
                cropped frame; the crop is the square of side
                ``max(w, h) * (1 + margin)`` around each (see
                :meth:`square_boxes`), zero outside the frame.
            rows: which frames the boxes belong to, (m,) indices; default
                all n frames in order (then m == n).

        Returns:
            uint8 (m, size, size, 3).
        """
        frames = _check_frames(frames)
        rows = np.arange(len(frames)) if rows is None else np.asarray(rows, np.int64)
        squares = self.square_boxes(boxes).astype(np.float32)
        if len(squares) != len(rows):
            raise ValueError(f"{len(squares)} boxes for {len(rows)} frames")
        if len(rows) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        crops = torch.stack([self._crop_one(frames[row], square)
                             for row, square in zip(rows, squares)])
        return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _crop_one(self, frame: np.ndarray, square: np.ndarray) -> torch.Tensor:
        """:meth:`crop` of one frame (H, W, 3) around ``square`` (4,): float
        (3, size, size), ``roi_align``'s crop (``sampling_ratio=0``,
        ``aligned=True``: ceil(side / size) bilinear samples a side per
        output pixel, averaged) of the pixels around the square
        (:func:`pixels_around`). A square larger than the crop is computed
        as the sub-image weighted along its rows, then its columns
        (:func:`weighted_crop`): the same values to float rounding, 1.8-5x
        faster on faces 2-9 times the crop's side (``python -m
        bench.crops``); a smaller one goes through ``roi_align`` itself
        (:func:`roi_align_crop`), faster there."""
        x, shifted = pixels_around(frame, square, self.device)
        if shifted[2] - shifted[0] <= self.size:  # one sample per output pixel
            return roi_align_crop(x, shifted, self.size)
        return weighted_crop(x, shifted, self.size)

    def align(self, frames: np.ndarray, landmarks: np.ndarray,
              rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Cut crops aligned on five face landmarks, size x size.

        Each face's landmarks are mapped onto :func:`template_points` (the
        ArcFace template framed with the margin) by the least-squares
        similarity transform (:func:`similarity_transform`); the crop is
        the frame warped by it (``affine_grid`` + ``grid_sample``, batched on
        ``device``), bilinear, zero outside the frame. Where the crop
        shrinks the face, each output pixel averages k x k samples, k = the
        source pixels per output pixel rounded up (at most 8), as box crops
        average: no aliasing.

        Args:
            frames: uint8 (n, H, W, 3), RGB.
            landmarks: (m, 5, 2) ``x, y`` in pixels (MTCNN's order: left eye,
                right eye, nose, left and right mouth corners, as seen in
                the image), one set per cropped frame; all finite.
            rows: which frames the landmarks belong to, (m,) indices;
                default all n frames in order (then m == n).

        Returns:
            uint8 (m, size, size, 3).
        """
        frames = _check_frames(frames)
        rows = np.arange(len(frames)) if rows is None else np.asarray(rows, np.int64)
        landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
        if len(landmarks) != len(rows):
            raise ValueError(f"{len(landmarks)} landmark sets for {len(rows)} frames")
        if not np.isfinite(landmarks).all():
            raise ValueError("landmarks must be finite")
        if len(rows) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        h, w = frames.shape[1:3]
        template = torch.as_tensor(template_points(self.size, self.margin))
        # Crop pixels -> frame pixels, estimated in float64 (5 points: nothing to
        # gain on a device), then the warp's normalised form.
        to_frame = similarity_transform(template.expand(len(rows), 5, 2),
                                        torch.from_numpy(landmarks))
        theta = _normalised(to_frame, self.size, h, w).float()
        samples = np.minimum(np.ceil(torch.linalg.det(to_frame[:, :, :2]).abs().sqrt().numpy()
                                     - 1e-6), _MAX_SUPERSAMPLE).clip(1).astype(np.int64)
        crops = np.zeros((len(rows), self.size, self.size, 3), np.uint8)
        for s, x in _float_frames(frames, rows, self.device):
            part = slice(s, s + len(x))
            for k in np.unique(samples[part]):  # crops of one sampling at a time
                pick = np.flatnonzero(samples[part] == k)
                side = self.size * int(k)
                grid = F.affine_grid(theta[torch.as_tensor(s + pick)].to(self.device),
                                     [len(pick), 3, side, side], align_corners=False)
                y = F.grid_sample(x[torch.as_tensor(pick, device=self.device)], grid,
                                  mode="bilinear", padding_mode="zeros", align_corners=False)
                if k > 1:
                    y = F.avg_pool2d(y, int(k))
                crops[s + pick] = y.round().clamp(0, 255).to(torch.uint8).permute(
                    0, 2, 3, 1).cpu().numpy()
        return crops

    def cut(self, frames: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
            rows: Optional[np.ndarray] = None) -> np.ndarray:
        """The crops of ``crop_kind``: :meth:`align` on the landmarks
        (``"aligned"``; a row without finite landmarks falls back to its
        box crop) or :meth:`crop` around the boxes (``"box"``)."""
        if self.crop_kind != "aligned":
            return self.crop(frames, boxes, rows=rows)
        rows = np.arange(len(boxes)) if rows is None else np.asarray(rows, np.int64)
        landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
        known = np.isfinite(landmarks).all(axis=(1, 2))
        if known.all():
            return self.align(frames, landmarks, rows=rows)
        crops = np.zeros((len(rows), self.size, self.size, 3), np.uint8)
        crops[known] = self.align(frames, landmarks[known], rows=rows[known])
        crops[~known] = self.crop(frames, np.asarray(boxes)[~known], rows=rows[~known])
        return crops


def fill_missing(crops: np.ndarray, found: np.ndarray, last: Optional[np.ndarray],
                 fill: str) -> Optional[np.ndarray]:
    """Fill the no-face rows of ``crops`` (in place) as ``fill`` says:
    ``"last"``, the last good crop (``last``: the one before these rows, or
    None), ``"zeros"``, as they are. Returns the last good crop after these
    rows (a copy), for the next call."""
    if fill == "zeros":
        return crops[np.flatnonzero(found)[-1]].copy() if found.any() else last
    for i in range(len(found)):
        if found[i]:
            last = crops[i]
        elif last is not None:
            crops[i] = last
    return None if last is None else last.copy()


def pixels_around(frame: np.ndarray, square: np.ndarray,
                  device: Union[str, torch.device] = "cpu") -> Tuple[torch.Tensor, np.ndarray]:
    """The pixels of ``frame`` (H, W, 3) uint8 that a crop around ``square``
    (4,) float32 reads: the square and 2 px around it, within the frame, as
    a uint8 tensor (h, w, 3) on ``device``, and the square in its
    coordinates (4,) float32. A crop of them equals the crop of the whole
    frame, whose edges are the sub-image's where the square reaches them."""
    h, w = frame.shape[:2]
    x0 = min(max(math.floor(square[0]) - 2, 0), w - 1)
    y0 = min(max(math.floor(square[1]) - 2, 0), h - 1)
    x1 = max(min(math.ceil(square[2]) + 2, w), x0 + 1)
    y1 = max(min(math.ceil(square[3]) + 2, h), y0 + 1)
    x = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).to(device)
    # float32 like the square, whose difference from an integer is exact
    return x, square - np.array([x0, y0, x0, y0], np.float32)


def roi_align_crop(x: torch.Tensor, square: np.ndarray, size: int) -> torch.Tensor:
    """``roi_align``'s crop (``aligned=True``, ``sampling_ratio=0``) of
    ``square`` (4,) in the pixels ``x`` (h, w, 3): float (3, size, size)."""
    roi = torch.from_numpy(np.concatenate([[0], square]).astype(np.float32))[None]
    return roi_align(x.permute(2, 0, 1)[None].float().contiguous(), roi.to(x.device),
                     output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)[0]


def weighted_crop(x: torch.Tensor, square: np.ndarray, size: int) -> torch.Tensor:
    """:func:`roi_align_crop` computed axis by axis (:func:`roi_align_weights`):
    ``x`` weighted along its rows, then its columns; float (3, size, size)."""
    h, w = x.shape[:2]
    x = _weigh_axis(x.float(), *roi_align_weights(square[1], square[3], size, h))  # (size, w, 3)
    x = _weigh_axis(x.transpose(0, 1), *roi_align_weights(square[0], square[2], size, w))
    return x.permute(2, 1, 0)  # (size x, size y, 3) -> (3, size y, size x)


def _weigh_axis(x: torch.Tensor, index: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """``x`` (n, ...) weighted along its first axis: (size, ...), output ``i``
    the sum of ``x[index[i]]`` times ``weights[i]`` (:func:`roi_align_weights`)."""
    size, band = index.shape
    index_t = torch.from_numpy(index).to(x.device)
    weights_t = torch.from_numpy(weights).to(x.device)
    rows = x.reshape(len(x), -1).index_select(0, index_t.reshape(-1)).view(size, band, -1)
    return torch.bmm(weights_t[:, None, :], rows).view(size, *x.shape[1:])


def roi_align_weights(start: float, end: float, size: int, extent: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """The weights by which torchvision's ``roi_align`` (``aligned=True``,
    ``sampling_ratio=0``, ``spatial_scale=1``) reads one axis, for the region
    ``[start, end)`` of an axis of ``extent`` pixels cut to ``size`` pixels.

    ``roi_align`` averages, per output pixel, ``g = ceil((end - start) /
    size)`` samples a side, each a bilinear read, and both its bilinear
    weights and its rules at the edges (a sample beyond ``[-1, extent]``
    reads 0; one in ``[-1, 0]`` reads pixel 0; one past the last pixel
    reads it) act on each axis alone: its crop of an image is the image
    weighted along one axis, then along the other. Output pixel ``i`` reads
    the ``band`` input pixels ``index[i]`` with weights ``weights[i]``.

    Returns:
        ``index`` int64 (size, band) and ``weights`` float32 (size, band);
        the dense weights are ``weights`` scattered onto ``index``.
    """
    length = np.float32(end) - np.float32(start)
    grid = max(math.ceil(length / np.float32(size)), 1)
    step = np.float64(length / np.float32(size))
    offsets = (np.arange(size)[:, None] + (np.arange(grid)[None, :] + 0.5) / grid) * step
    pos = np.float64(np.float32(start) - np.float32(0.5)) + offsets  # (size, grid)
    inside = ((pos >= -1.0) & (pos <= extent)).astype(np.float64)
    pos = np.maximum(pos, 0.0)
    low = np.minimum(np.floor(pos).astype(np.int64), extent - 1)
    last = low >= extent - 1
    high = np.where(last, low, low + 1)
    frac = np.where(last, 0.0, pos - low)
    first = low.min(axis=1, keepdims=True)
    band = np.arange(int((high - first).max()) + 1)
    # (size, grid, band): each sample's two bilinear weights at their places
    weights = (((low - first)[..., None] == band) * ((1 - frac) * inside)[..., None]
               + ((high - first)[..., None] == band) * (frac * inside)[..., None])
    index = np.minimum(first + band, extent - 1)  # weight 0 past the end
    return index, (weights.sum(axis=1) / grid).astype(np.float32)


def similarity_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The similarity transforms (rotation, uniform scale, shift; no
    reflection) that best map point sets ``source`` onto ``target``, in
    least squares (Umeyama's estimate, in 2-D closed form).

    Args:
        source, target: tensors (..., k, 2) of matching points, k >= 2, on
            any device; the transform is computed in their dtype.

    Returns:
        (..., 2, 3) tensors ``[A | t]`` with ``target ~= source @ A.T + t``
        and ``A = s * R`` (R a rotation). Points all at one place (nothing to
        scale) give a scale of 0.
    """
    source, target = torch.as_tensor(source), torch.as_tensor(target)
    ms, mt = source.mean(dim=-2, keepdim=True), target.mean(dim=-2, keepdim=True)
    a, b = source - ms, target - mt
    spread = (a * a).sum(dim=(-2, -1)).clamp_min(torch.finfo(a.dtype).tiny)
    # As complex numbers, target = (c + i d) * source + t: c + i d is the sum
    # of conj(a) * b over the sum of |a|^2.
    c = (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]).sum(dim=-1) / spread
    d = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(dim=-1) / spread
    rotation = torch.stack([torch.stack([c, -d], dim=-1), torch.stack([d, c], dim=-1)], dim=-2)
    shift = mt.squeeze(-2) - (rotation @ ms.squeeze(-2)[..., None])[..., 0]
    return torch.cat([rotation, shift[..., None]], dim=-1)


def template_points(size: int, margin: float = 0.0) -> np.ndarray:
    """:data:`TEMPLATE_112` placed in a size x size crop with ``margin``:
    float64 (5, 2) crop pixels. The crop spans ``112 * (1 + margin)``
    template units, the template's 112 x 112 frame centred in it."""
    side = 112.0 * (1 + margin)
    return (TEMPLATE_112 + 56.0 * margin) * (size / side)


def _normalised(to_frame: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Transforms crop pixels -> frame pixels (m, 2, 3) as ``affine_grid``'s
    theta: output coordinates in [-1, 1] -> input coordinates in [-1, 1]
    (``align_corners=False``: -1 and 1 are the outer edges of the first and
    last pixels, pixel i spans [i, i + 1))."""
    A, t = to_frame[:, :, :2], to_frame[:, :, 2]
    half = size / 2.0
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=to_frame.dtype)
    linear = scale[:, None] * A * half
    shift = scale * (A.sum(dim=-1) * half + t) - 1
    return torch.cat([linear, shift[..., None]], dim=-1)


def _float_frames(frames: np.ndarray, rows: np.ndarray, device: torch.device
                  ) -> Iterator[Tuple[int, torch.Tensor]]:
    """The frames of ``rows`` as float tensors (c, 3, H, W) on ``device``, a
    chunk at a time (of at most _CROP_PIXEL_BUDGET pixels): ``(first, x)``."""
    h, w = frames.shape[1:3]
    chunk = max(1, _CROP_PIXEL_BUDGET // (h * w))
    for s in range(0, len(rows), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[rows[s:s + chunk]])).to(device)
        yield s, x.permute(0, 3, 1, 2).float()


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (n, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def resize_only(frames: np.ndarray, size: int = 150) -> np.ndarray:
    """Resize frames that are already face crops (e.g. FER2013) to size x size.

    No detection. Non-square frames are first zero-padded to a square
    (centred), like the crops of :class:`FacePipeline`; resizing is bilinear
    with antialiasing (averaging when shrinking).

    Args:
        frames: uint8 (n, H, W) grey or (n, H, W, C) with C = 1 (grey),
            3 (RGB) or 4 (RGBA, alpha dropped).
        size: side of the output, in pixels.

    Returns:
        uint8 array (n, size, size, 3), RGB.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be (n, H, W) or (n, H, W, 1|3|4), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n, h, w = frames.shape[:3]
    x = torch.from_numpy(np.ascontiguousarray(frames[..., :3])).permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    side = max(h, w)
    if h != w:
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top))
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
