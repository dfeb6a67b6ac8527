"""Box crops: our axis-by-axis resize against torchvision's ``roi_align``.

For face squares of several sides cut to several output sizes from one real
frame, in one run, one thread: the time of
``FaceCropper._crop_one`` (the sub-image around the square weighted along
rows, then columns: :func:`end2you_visual.crops.roi_align_weights`) and of
``roi_align`` on the same sub-image (what `generate` ran before), and the
largest difference between the two crops (float, and after rounding to
uint8 as `generate` stores them).

``python -m bench.crops CLIP`` prints JSON.
"""
import argparse
import json
import time

import numpy as np
import torch

from end2you_visual.crops import pixels_around, roi_align_crop
from end2you_visual.faces import FacePipeline
from end2you_visual.video import iter_frame_batches

CASES = [(60, 48), (150, 48), (300, 48), (450, 48), (150, 150), (300, 150), (450, 150)]


def roi_align_of(frame, square, size):
    """The crop `generate` cut before: ``roi_align`` on the pixels around
    ``square``."""
    x, shifted = pixels_around(frame, square)
    return roi_align_crop(x, shifted, size)


def best_time(fn, repeats=5, calls=40):
    """Best mean seconds per call over ``repeats`` runs of ``calls`` calls."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, frames = next(iter(iter_frame_batches(args.clip, 1)))
    frame = frames[0]
    h, w = frame.shape[:2]
    pipeline = FacePipeline()
    rows = []
    for side, size in CASES:
        pipeline.cropper.size = size
        x0, y0 = (w - side) / 2 + 0.37, max((h - side) / 2, 0) + 0.61  # centred, not on the grid
        square = np.array([x0, y0, x0 + side, y0 + side], np.float32)
        ours = pipeline.cropper._crop_one(frame, square)
        theirs = roi_align_of(frame, square, size)
        rounded = (ours.round().clamp(0, 255) - theirs.round().clamp(0, 255)).abs()
        t_ours = best_time(lambda: pipeline.cropper._crop_one(frame, square))
        t_theirs = best_time(lambda: roi_align_of(frame, square, size))
        rows.append({"side": side, "size": size, "ours_ms": 1e3 * t_ours,
                     "roi_align_ms": 1e3 * t_theirs, "speedup": t_theirs / t_ours,
                     "max_difference": float((ours - theirs).abs().max()),
                     "max_difference_uint8": float(rounded.max())})
    print(json.dumps({"clip": args.clip, "frame": [h, w], "threads": 1, "cases": rows},
                     indent=2))


if __name__ == "__main__":
    main()
