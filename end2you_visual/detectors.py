"""Face detectors: what finds faces in whole frames and refines a face
where it is expected, behind one small interface.

The face pipelines (:class:`~end2you_visual.faces.FacePipeline`, the main
subject; :class:`~end2you_visual.people.PeopleTracker`, every person) use a
:class:`FaceDetector`; :class:`MTCNNDetector` (facenet-pytorch's MTCNN, its
weights shipped in the package) is the one they build. Another detector is
one class in one file with these methods::

    class MyDetector:
        name = "mine"
        def detect(self, frames): ...        # whole frames -> faces per frame
        def refine(self, frames, boxes): ... # one expected box per frame -> the face there
        def check_frame_size(self, width, height, path=None): ...

Shapes: ``frames`` uint8 (n, H, W, 3) RGB; boxes ``x1, y1, x2, y2`` and
landmarks ``x, y`` in pixels of the frames given; landmarks are five points
in MTCNN's order (eyes, nose tip, mouth corners, left and right as seen).
"""
from __future__ import annotations

import os
from typing import List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .devices import resolve_device
from .face_settings import check_frame_size, check_setting, detector_min_face
from .mtcnn import channels_last, refine_boxes
from .ranges import check_number

__all__ = ["FaceDetector", "MTCNNDetector", "Detections"]

#: Per frame: boxes float32 (k, 4), probabilities float32 (k,), landmarks
#: float32 (k, 5, 2); k >= 0, most probable first.
Detections = Tuple[np.ndarray, np.ndarray, np.ndarray]


class FaceDetector(Protocol):
    """What a face pipeline needs of a detector."""

    name: str

    def detect(self, frames: np.ndarray) -> List[Detections]:
        """Every face of each whole frame (n frames -> n Detections)."""

    def refine(self, frames: np.ndarray, boxes: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each frame, the face at its expected box (n, 4): the refined
        boxes (n, 4), probabilities (n,) and landmarks (n, 5, 2)."""

    def check_frame_size(self, width: int, height: int,
                         path: Union[str, os.PathLike[str], None] = None) -> None:
        """Raise InputError when no face can be searched for in such frames."""


class MTCNNDetector:
    """facenet-pytorch's MTCNN as a :class:`FaceDetector`.

    ``detect`` runs the whole cascade (P-, R-, O-Net), optionally on frames
    downscaled by ``detect_scale`` (boxes scaled back), ``batch_size``
    frames per call; ``refine`` runs only O-Net on the expected boxes at
    three sizes (:func:`~end2you_visual.mtcnn.refine_boxes`). The networks
    run channels-last (the same weights, several times faster on a CPU).

    Args:
        device: a torch device (or its name).
        min_face_size, detect_scale, batch_size: the face settings of those
            names (:class:`~end2you_visual.face_settings.FaceSettings`),
            checked here: the smallest face searched for, in source pixels;
            None or a factor in (0, 1] to detect on smaller frames; frames
            per MTCNN call.
        thresholds: MTCNN's three stage thresholds.
    """

    name = "mtcnn"

    def __init__(self, device: Union[str, torch.device] = "cpu", min_face_size: int = 20,
                 detect_scale: Optional[float] = None,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), batch_size: int = 16):
        from facenet_pytorch import MTCNN

        self.device = resolve_device(device)
        self.min_face_size = check_setting("min_face_size", min_face_size)
        detect_scale = check_setting("detect_scale", detect_scale)
        self.detect_scale = None if detect_scale in (None, 1.0) else detect_scale
        self.batch_size = check_setting("batch_size", batch_size)
        self.thresholds = tuple(check_number("thresholds", t, 0, 1) for t in thresholds)
        self.mtcnn = channels_last(MTCNN(
            keep_all=True, select_largest=False, post_process=False,
            min_face_size=detector_min_face(self.min_face_size, self.detect_scale),
            thresholds=list(self.thresholds), device=self.device).eval())

    def check_frame_size(self, width: int, height: int,
                         path: Union[str, os.PathLike[str], None] = None) -> None:
        check_frame_size(width, height, self.min_face_size, self.detect_scale, path)

    def detect(self, frames: np.ndarray) -> List[Detections]:
        self.check_frame_size(frames.shape[2], frames.shape[1])
        results = []
        for s in range(0, len(frames), self.batch_size):
            chunk = frames[s:s + self.batch_size]
            batch: Union[np.ndarray, torch.Tensor]  # frames, or downscaled
            if self.detect_scale is None:
                batch, scale = chunk, np.ones(4, np.float32)
            else:
                batch, scale = self._downscale(chunk)
            boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
            for b, p, q in zip(boxes, probs, points):
                if b is None:
                    results.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                    np.zeros((0, 5, 2), np.float32)))
                else:
                    b = np.asarray(b, np.float32).reshape(-1, 4) / scale
                    q = np.asarray(q, np.float32).reshape(-1, 5, 2) / scale[:2]
                    results.append((b, np.asarray(p, np.float32).reshape(-1), q))
        return results

    def refine(self, frames: np.ndarray, boxes: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return refine_boxes(frames, boxes, self.mtcnn.onet, self.device)

    def _downscale(self, frames: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
        """Frames (n, H, W, 3) uint8 -> float tensor (n, h, w, 3) and the
        factors (4,) by which ``x1, y1, x2, y2`` shrank."""
        h, w = frames.shape[1:3]
        th = max(1, round(h * self.detect_scale))
        tw = max(1, round(w * self.detect_scale))
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        scale = np.array([tw / w, th / h, tw / w, th / h], np.float32)
        return x.permute(0, 2, 3, 1), scale
