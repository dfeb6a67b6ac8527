"""Box crops: our axis-by-axis resize against torchvision's ``roi_align``.

For face squares of several sides cut to several output sizes from one real
frame, in one run, one thread: the time of
``FacePipeline._crop_one`` (the sub-image around the square weighted along
rows, then columns: :func:`end2you_visual.crops.roi_align_weights`) and of
``roi_align`` on the same sub-image (what `generate` ran before), and the
largest difference between the two crops (float, and after rounding to
uint8 as `generate` stores them).

``python -m bench.crops CLIP`` prints JSON.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from torchvision.ops import roi_align

from end2you_visual.faces import FacePipeline
from end2you_visual.video import iter_frame_batches

CASES = [(60, 48), (150, 48), (300, 48), (450, 48), (150, 150), (300, 150), (450, 150)]


def roi_align_crop(frame, square, size):
    """The crop `generate` cut before: ``roi_align`` on the sub-image around
    ``square`` (2 px border, within the frame)."""
    h, w = frame.shape[:2]
    x0 = min(max(math.floor(square[0]) - 2, 0), w - 1)
    y0 = min(max(math.floor(square[1]) - 2, 0), h - 1)
    x1 = max(min(math.ceil(square[2]) + 2, w), x0 + 1)
    y1 = max(min(math.ceil(square[3]) + 2, h), y0 + 1)
    x = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1]))
    x = x.permute(2, 0, 1)[None].float().contiguous()
    shifted = square - np.array([x0, y0, x0, y0], np.float32)
    roi = torch.from_numpy(np.concatenate([[0], shifted]).astype(np.float32))[None]
    return roi_align(x, roi, output_size=size, spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)[0]


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
        pipeline.size = size
        x0, y0 = (w - side) / 2 + 0.37, max((h - side) / 2, 0) + 0.61  # centred, not on the grid
        square = np.array([x0, y0, x0 + side, y0 + side], np.float32)
        ours = pipeline._crop_one(frame, square)
        theirs = roi_align_crop(frame, square, size)
        rounded = (ours.round().clamp(0, 255) - theirs.round().clamp(0, 255)).abs()
        t_ours = best_time(lambda: pipeline._crop_one(frame, square))
        t_theirs = best_time(lambda: roi_align_crop(frame, square, size))
        rows.append({"side": side, "size": size, "ours_ms": 1e3 * t_ours,
                     "roi_align_ms": 1e3 * t_theirs, "speedup": t_theirs / t_ours,
                     "max_difference": float((ours - theirs).abs().max()),
                     "max_difference_uint8": float(rounded.max())})
    print(json.dumps({"clip": args.clip, "frame": [h, w], "threads": 1, "cases": rows},
                     indent=2))


if __name__ == "__main__":
    main()
