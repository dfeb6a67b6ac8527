"""Student against teacher: `predict` frames/s of two models on the CPU, in one run.

For each model (zoo names or checkpoints), on the same real clip, same
device and threads, runs interleaved (teacher, student, teacher, ...) so that
a busy spell of the machine hits both:

- ``model_fps``: `predict`'s model stage alone: the clip's face crops (cut
  once, at the models' input size and framing) through
  :class:`~end2you_visual.inference.StreamingPredictor` in `predict`'s
  batches (``--batch``, `predict`'s ``--batch-size``), activated outputs
  back as NumPy;
- ``predict_fps``: :func:`~end2you_visual.predict.predict_video` end to
  end (decode, face detection and tracking, crops, the model; no files
  written), the figure a user sees;
- ``student_vs_teacher``: the student's figures over the teacher's.

Each figure is the best of ``--repeats`` runs. ``python -m bench.students
CLIP --teacher resnet18-small-fer2013-cpu --student resnet18-half-fer2013-cpu``
prints JSON (``--out FILE`` writes it too).
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from end2you_visual.faces import FacePipeline
from end2you_visual.framing import model_framing, resolve_face_settings
from end2you_visual.inference import StreamingPredictor, load_model
from end2you_visual.models.checkpoint import unwrap_model
from end2you_visual.predict import predict_video
from end2you_visual.video import iter_frame_batches, probe_video


def clip_crops(clip, model, batch):
    """The face crops `predict` gives ``model`` for ``clip``: uint8 (T, S, S, 3)."""
    base = unwrap_model(model)
    settings, _ = resolve_face_settings({"batch_size": batch}, model_framing(model))
    settings = replace(settings, size=base.config["input_size"], device="cpu")
    pipeline = FacePipeline.from_settings(settings, probe_video(clip).fps)
    crops = [pipeline.process(frames).crops.copy() for _, frames in iter_frame_batches(clip, batch)]
    return np.concatenate(crops)


def model_stage_fps(model, crops, batch):
    """Frames/s of `predict`'s model stage over ``crops``, ``batch`` at a time."""
    predictor = StreamingPredictor(model, "cpu", "fp32", activate=True)
    predictor(crops[:batch])  # warm-up
    predictor.reset()
    started = time.perf_counter()
    for i in range(0, len(crops), batch):
        predictor(crops[i:i + batch])
    return len(crops) / (time.perf_counter() - started)


def predict_fps(model, clip, batch):
    """Frames/s of `predict_video` end to end on ``clip`` (no files written)."""
    started = time.perf_counter()
    result = predict_video(clip, model, out_dir=None, device="cpu", precision="fp32",
                           plot=False, batch_size=batch)
    return result.n_frames / (time.perf_counter() - started)


def compare(clip, teacher, student, batch=16, repeats=3):
    """The benchmark's figures (see the module doc) as a dict."""
    names = {"teacher": teacher, "student": student}
    models = {k: load_model(v, "cpu") for k, v in names.items()}
    sizes = {k: unwrap_model(m).config["input_size"] for k, m in models.items()}
    crops = {k: clip_crops(clip, m, batch) for k, m in models.items()}
    figures = {k: {"model": names[k], "input_size": sizes[k], "frames": len(crops[k]),
                   "model_fps": 0.0, "predict_fps": 0.0} for k in names}
    for _ in range(repeats):
        for k, model in models.items():
            fig = figures[k]
            fig["model_fps"] = max(fig["model_fps"], model_stage_fps(model, crops[k], batch))
            fig["predict_fps"] = max(fig["predict_fps"], predict_fps(model, clip, batch))
    ratio = {f: figures["student"][f] / figures["teacher"][f] for f in ("model_fps", "predict_fps")}
    return {"clip": Path(clip).name, "batch": batch, "repeats": repeats,
            "threads": torch.get_num_threads(), **figures, "student_vs_teacher": ratio}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a video with a face")
    parser.add_argument("--teacher", default="resnet18-small-fer2013-cpu")
    parser.add_argument("--student", default="resnet18-half-fer2013-cpu")
    parser.add_argument("--batch", type=int, default=16, help="predict's --batch-size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    report = compare(args.clip, args.teacher, args.student, args.batch, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
