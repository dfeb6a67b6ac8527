"""The main subject's boxes of two versions of the code, compared.

``python -m bench.subject_boxes dump OUT.npz CLIP...`` writes the boxes and
face marks of ``FacePipeline(fps, batch_size=16, size=16)`` (batches of 16
frames, one thread) per clip, with whichever ``end2you_visual`` is imported:
run it once in this checkout and once with ``PYTHONPATH`` pointing at an
older checkout (``git worktree add /tmp/old REV``). ``python -m
bench.subject_boxes compare OLD.npz NEW.npz`` prints, per clip, the frames
found by each, the frames whose marks differ, and the mean and least IoU
of the boxes where both found the face (a markdown table).
"""
import argparse
from pathlib import Path

import numpy as np

from bench.boxes import iou


def dump(out, clips):
    import torch

    from end2you_visual.faces import FacePipeline
    from end2you_visual.video import VideoFrames

    torch.set_num_threads(1)
    arrays = {}
    for clip in clips:
        video = VideoFrames(clip, 16)
        pipeline = FacePipeline(fps=video.info.fps, batch_size=16, size=16)
        parts = [pipeline.process(frames) for _, frames in video]
        arrays[f"{Path(clip).name}:boxes"] = np.concatenate([p.boxes for p in parts])
        arrays[f"{Path(clip).name}:found"] = np.concatenate([p.found for p in parts])
        print(clip, flush=True)
    np.savez_compressed(out, **arrays)


def compare(old, new):
    old, new = np.load(old), np.load(new)
    rows = ["| clip | frames | found before / now | marks differ | mean IoU | least IoU |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for clip in sorted({k.split(":")[0] for k in old.files}):
        fo, fn = old[f"{clip}:found"], new[f"{clip}:found"]
        both = fo & fn
        overlap = iou(old[f"{clip}:boxes"][both], new[f"{clip}:boxes"][both])
        mean, least = (f"{overlap.mean():.3f}", f"{overlap.min():.2f}") if both.any() \
            else ("-", "-")
        rows.append(f"| {clip} | {len(fo)} | {fo.sum()} / {fn.sum()} | {(fo != fn).sum()} | "
                    f"{mean} | {least} |")
    print("\n".join(rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("clips", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    args = parser.parse_args(argv)
    if args.what == "dump":
        dump(args.out, args.clips)
    else:
        compare(args.old, args.new)


if __name__ == "__main__":
    main()
