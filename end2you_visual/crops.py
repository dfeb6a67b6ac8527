"""Square face crops: cutting them around face boxes, filling frames without a
face, and resizing frames that are already face crops.

:class:`FaceCropper` is the cropping part of
:class:`~end2you_visual.faces.FacePipeline` (steps 5 and 6 of
:mod:`end2you_visual.faces`), which holds its settings (``size``,
``margin``, ``device``, ``fill``) and state (``_last_crop``).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ["FaceCropper", "resize_only"]

# Frames converted to float at once when cropping, in pixels (x 3 channels x
# 4 bytes: about 200 MB), so a batch of 1080p frames is cropped in chunks.
_CROP_PIXEL_BUDGET = 1 << 24


class FaceCropper:
    """Cropping of :class:`~end2you_visual.faces.FacePipeline`."""

    def square_boxes(self, boxes):
        """Face boxes (m, 4) -> the square crop regions (m, 4) cut around them."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + self.margin) / 2
        return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)

    def crop(self, frames, boxes, rows=None):
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
        squares = torch.as_tensor(self.square_boxes(boxes), dtype=torch.float32)
        if len(squares) != len(rows):
            raise ValueError(f"{len(squares)} boxes for {len(rows)} frames")
        if len(rows) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        h, w = frames.shape[1:3]
        chunk = max(1, _CROP_PIXEL_BUDGET // (h * w))
        crops = []
        for s in range(0, len(rows), chunk):
            x = torch.from_numpy(np.ascontiguousarray(frames[rows[s:s + chunk]])).to(self.device)
            x = x.permute(0, 3, 1, 2).float()
            regions = squares[s:s + chunk].to(self.device)
            index = torch.arange(len(regions), dtype=torch.float32, device=self.device)[:, None]
            # sampling_ratio=0: ceil(region / size) samples per output pixel,
            # i.e. averaging when shrinking (no aliasing), bilinear when growing.
            y = roi_align(x, torch.cat([index, regions], dim=1), output_size=self.size,
                          spatial_scale=1.0, sampling_ratio=0, aligned=True)
            crops.append(y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(crops)

    def _fill_missing(self, crops, found):
        """Fill no-face crops (in place) and remember the last good crop."""
        if self.fill == "zeros":
            if found.any():
                self._last_crop = crops[np.flatnonzero(found)[-1]].copy()
            return
        last = self._last_crop
        for i in range(len(found)):
            if found[i]:
                last = crops[i]
            elif last is not None:
                crops[i] = last
        self._last_crop = None if last is None else last.copy()


def _check_frames(frames):
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (n, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def resize_only(frames, size=150):
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
