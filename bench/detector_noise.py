"""How much MTCNN's own box moves when the frame moves by a pixel or two.

``python -m bench.detector_noise [--every K] CLIP...`` detects the most
probable face of every K-th frame (MTCNN's whole cascade, as
``--detector full``) on the frame as it is and on the frame shifted right
and down by (1, 0), (0, 1) and (3, 2) pixels (the box shifted back), and
prints per clip the mean IoU between the two boxes. A face does not change
when the picture moves by a pixel; what the box does then is the detector's
own noise: the agreement any other way of finding the box (the default
track-guided detection among them) can be expected to reach with it.

``--refine`` also prints, per clip, how well O-Net's refinement alone
(:func:`~end2you_visual.mtcnn.refine_boxes`, what ``--detector tracked``
runs between whole-frame searches), given the previous used frame's
MTCNN box as the expected one, agrees with MTCNN's box on the frame, for a
few sets of candidate scales (the default is 0.9, 1.0, 1.1).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from bench.boxes import iou

SHIFTS = ((1, 0), (0, 1), (3, 2))


def _best_boxes(detector, frames, dx=0, dy=0):
    """The most probable face's box per frame (NaN: none), shifted back by (dx, dy)."""
    boxes = [d[0][0] - [dx, dy, dx, dy] if len(d[0]) else np.full(4, np.nan)
             for d in detector.detect(frames)]
    return np.asarray(boxes, np.float64)


def clip_noise(path, every=4):
    """Mean IoU of MTCNN's box with its box on the shifted frame, per shift."""
    import torch

    from end2you_visual.detectors import MTCNNDetector
    from end2you_visual.video import VideoFrames

    torch.set_num_threads(1)
    detector = MTCNNDetector("cpu")
    frames = np.concatenate([f for _, f in VideoFrames(path, 16)])[::every]
    base = _best_boxes(detector, frames)
    result = {"clip": Path(path).name, "frames": len(frames)}
    for dx, dy in SHIFTS:
        shifted = np.zeros_like(frames)
        shifted[:, dy:, dx:] = frames[:, :frames.shape[1] - dy, :frames.shape[2] - dx]
        moved = _best_boxes(detector, shifted, dx, dy)
        both = np.isfinite(base).all(1) & np.isfinite(moved).all(1)
        result[f"iou_shift_{dx}_{dy}"] = round(float(iou(base[both], moved[both]).mean()), 4)
    return result


REFINE_SCALES = ((0.9, 1.0, 1.1), (1.0,), (1.1,), (1.0, 1.1, 1.2))


def refine_agreement(path, every=4):
    """Mean IoU of O-Net's refinement of the previous used frame's MTCNN box
    with MTCNN's box on the frame, per set of candidate scales."""
    import torch

    from end2you_visual.detectors import MTCNNDetector
    from end2you_visual.mtcnn import refine_boxes
    from end2you_visual.video import VideoFrames

    torch.set_num_threads(1)
    detector = MTCNNDetector("cpu")
    frames = np.concatenate([f for _, f in VideoFrames(path, 16)])[::every]
    boxes = _best_boxes(detector, frames)
    both = np.isfinite(boxes).all(1)
    both = both[1:] & both[:-1]
    before, now, seen = boxes[:-1][both], boxes[1:][both], frames[1:][both]
    result = {"clip": Path(path).name, "pairs": int(both.sum()),
              "iou_previous_box": round(float(iou(before, now).mean()), 4)}
    for scales in REFINE_SCALES:
        refined = refine_boxes(seen, before, detector.mtcnn.onet, scales=scales)[0]
        key = "iou_refined_" + "_".join(f"{s:g}" for s in scales)
        result[key] = round(float(iou(refined.astype(np.float64), now).mean()), 4)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--every", type=int, default=4, help="Use every k-th frame.")
    parser.add_argument("--refine", action="store_true",
                        help="Also O-Net's refinement against MTCNN's box.")
    args = parser.parse_args()
    for clip in args.clips:
        print(json.dumps(clip_noise(clip, args.every)), flush=True)
        if args.refine:
            print(json.dumps(refine_agreement(clip, args.every)), flush=True)


if __name__ == "__main__":
    main()
