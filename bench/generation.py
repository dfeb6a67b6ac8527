"""Generation benchmark: frames/s per stage and peak memory of `generate`.

For each clip, measured in this run (each measurement in a fresh process, so
that its peak RSS is its own):

- ``decode``: streaming decode alone;
- ``mtcnn``: facenet-pytorch MTCNN alone, batched, on frames already decoded
  (the reference: what detection costs without anything else);
- ``faces``: our face pipeline (detect, track, smooth, crop) on decoded frames;
- ``generate``: the whole of `generate` end to end (decode, faces, labels,
  HDF5 write), the figure users get, with the default detector
  (``tracked``: O-Net refining the tracked face where it is expected);
- ``generate_full``: the same with ``detector="full"`` (MTCNN on every
  whole frame, as before the tracked detector).

``--accuracy CLIP...`` compares the default detector's boxes with full
per-frame detection's instead (see :func:`accuracy_clip`).

``python -m bench.generation --device cuda CLIP...`` prints JSON.
``--memory CLIP`` also runs `generate` on the clip looped 1x, 4x and 16x to
show that peak memory does not grow with the video's length.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.boxes import iou


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decoded(path, limit=None):
    from end2you_visual.video import iter_frame_batches

    frames = []
    for _, batch in iter_frame_batches(path, 64):
        frames.append(batch)
        if limit and sum(len(f) for f in frames) >= limit:
            break
    return np.concatenate(frames)[:limit]


def stage_decode(path, device, batch):
    from end2you_visual.video import iter_frame_batches

    start, n = time.perf_counter(), 0
    for _, frames in iter_frame_batches(path, batch):
        n += len(frames)
    return n, time.perf_counter() - start


def stage_mtcnn(path, device, batch):
    import torch
    from facenet_pytorch import MTCNN

    frames = _decoded(path)
    mtcnn = MTCNN(keep_all=True, device=device, post_process=False)
    mtcnn.detect(frames[:batch])  # warm-up (CUDA context, kernels)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(frames), batch):
            mtcnn.detect(frames[k:k + batch])
    _sync(device)
    return len(frames), time.perf_counter() - start


def stage_faces(path, device, batch, detect_every=1, detector="tracked"):
    from end2you_visual.faces import FacePipeline

    frames = _decoded(path)
    FacePipeline(device=device, batch_size=batch).process(frames[:batch])  # warm-up
    _sync(device)
    pipeline = FacePipeline(device=device, batch_size=batch, detect_every=detect_every,
                            detector=detector)
    start = time.perf_counter()
    for k in range(0, len(frames), batch):
        pipeline.process(frames[k:k + batch])
    if hasattr(pipeline, "flush"):
        pipeline.flush()
    _sync(device)
    return len(frames), time.perf_counter() - start


def stage_generate(path, device, batch, detect_every=1, detector="tracked"):
    from end2you_visual.faces import FacePipeline
    from end2you_visual.generate import GenerateSettings, generate

    # Warm up as for the other stages (CUDA context, kernels): the timed run
    # then measures the steady state a long video or a batch of files sees.
    FacePipeline(device=device, batch_size=batch).process(_decoded(path, batch))
    _sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "in.csv"
        csv.write_text(f"raw_file,label_file\n{Path(path).resolve()},\n")
        settings = GenerateSettings(device=device, batch_size=batch, detect_every=detect_every,
                                    detector=detector)
        start = time.perf_counter()
        (result,) = generate(csv, Path(tmp) / "out", settings, progress=False)
        elapsed = time.perf_counter() - start
    if result.status != "written":
        raise RuntimeError(f"{path}: {result.error}")
    return result.frames, elapsed


def stage_people(path, device, batch, detect_every=1):
    """The people tracker (``--faces all``) on decoded frames: every person
    detected, tracked and cropped. Also returns what it found."""
    from end2you_visual.face_settings import FaceSettings
    from end2you_visual.faces import FacePipeline
    from end2you_visual.video import probe_video

    frames = _decoded(path)
    fps = probe_video(path).fps
    settings = FaceSettings(device=device, batch_size=batch, detect_every=detect_every,
                            faces="all")
    FacePipeline.from_settings(settings, fps).track(frames[:batch])  # warm-up
    _sync(device)
    pipeline = FacePipeline.from_settings(settings, fps)
    start = time.perf_counter()
    for k in range(0, len(frames), batch):
        pipeline.track(frames[k:k + batch])
    _sync(device)
    seconds = time.perf_counter() - start
    people = pipeline.people()
    found = {"people": len(people),
             "mean_track_frames": float(np.mean([p.frames for p in people])) if people else 0,
             "full_detections": pipeline.full_detections}
    return len(frames), seconds, found


def stage_generate_people(path, device, batch, detect_every=1):
    """`generate --faces all` end to end."""
    from end2you_visual.faces import FacePipeline
    from end2you_visual.generate import GenerateSettings, generate

    # Warm up as stage_generate does: the steady state of a long video.
    FacePipeline(device=device, batch_size=batch).process(_decoded(path, batch))
    _sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        settings = GenerateSettings(device=device, batch_size=batch, detect_every=detect_every,
                                    faces="all")
        start = time.perf_counter()
        (result,) = generate(path, Path(tmp) / "out", settings, progress=False)
        elapsed = time.perf_counter() - start
    if result.status != "written":
        raise RuntimeError(f"{path}: {result.error}")
    return result.frames // max(result.sequences, 1), elapsed


STAGES = {"decode": stage_decode, "mtcnn": stage_mtcnn, "faces": stage_faces,
          "generate": stage_generate,
          "faces_full": lambda *a, **k: stage_faces(*a, detector="full", **k),
          "generate_full": lambda *a, **k: stage_generate(*a, detector="full", **k),
          "people": stage_people, "generate_people": stage_generate_people}


def _sync(device):
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_stage_in_subprocess(stage, path, device, batch, detect_every=1):
    """Run one stage in a fresh interpreter; returns its frames, seconds and peak RSS."""
    code = ("import json,sys;from bench.generation import _child;"
            "print(json.dumps(_child(*sys.argv[1:])))")
    out = subprocess.run([sys.executable, "-c", code, stage, str(path), device, str(batch),
                          str(detect_every)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{stage} on {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(stage, path, device, batch, detect_every):
    kwargs = {"detect_every": int(detect_every)} if stage.startswith(
        ("faces", "generate", "people")) else {}
    frames, seconds, *found = STAGES[stage](path, device, int(batch), **kwargs)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds,
            "peak_rss_mb": _peak_rss_mb(), **(found[0] if found else {})}


def bench_people(path, device="cpu", batch=16):
    """``--faces all`` on one clip against MTCNN alone on every frame (which
    finds every face too), in the same run: frames/s, people kept, mean
    frames per person, whole-frame searches."""
    row = {"clip": Path(path).name, "device": device, "batch": batch}
    for stage in ("mtcnn", "people", "generate_people"):
        row[stage] = run_stage_in_subprocess(stage, path, device, batch)
    for stage in ("people", "generate_people"):
        row[f"{stage}_vs_mtcnn"] = row[stage]["fps"] / row["mtcnn"]["fps"]
    return row


def two_person_composite(out_dir, clips_dir):
    """A 640 x 360, 25 fps, 4.8 s composite of two real people side by side
    (WolfgangLanger_Pexels.mp4 and liveportrait_d6.mp4 of ``clips_dir``),
    who swap sides at a cut at 2.4 s; None when the clips are not there."""
    import imageio_ffmpeg

    left, right = Path(clips_dir) / "WolfgangLanger_Pexels.mp4", \
        Path(clips_dir) / "liveportrait_d6.mp4"
    if not (left.is_file() and right.is_file()):
        return None
    out = Path(out_dir) / "two_person_composite.mp4"
    graph = ("[0:v]fps=25,scale=-2:360,crop=320:360:250:0,trim=end_frame=120,"
             "setpts=PTS-STARTPTS,split[a1][a2];[1:v]fps=25,scale=-2:360,crop=320:360,"
             "trim=end_frame=120,setpts=PTS-STARTPTS,split[b1][b2];[a1]trim=end_frame=60[l1];"
             "[b1]trim=end_frame=60[r1];[a2]trim=start_frame=60,setpts=PTS-STARTPTS[r2];"
             "[b2]trim=start_frame=60,setpts=PTS-STARTPTS[l2];[l1][r1]hstack[s1];"
             "[l2][r2]hstack[s2];[s1][s2]concat=n=2:v=1[out]")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i",
                    str(left), "-i", str(right), "-filter_complex", graph, "-map", "[out]",
                    "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(out)],
                   check=True)
    return out


def bench_clip(path, device="cpu", batch=32, detect_every=(1,), stages=None,
               per_k=("generate_full", "generate")):
    """All stages on one clip; ratios are against MTCNN alone and decode
    alone in the same run."""
    row = {"clip": Path(path).name, "device": device, "batch": batch}
    for stage in stages or ("decode", "mtcnn"):
        row[stage] = run_stage_in_subprocess(stage, path, device, batch)
    for k in detect_every:
        for stage in per_k:
            row[f"{stage}_k{k}"] = run_stage_in_subprocess(stage, path, device, batch, k)
    for k in detect_every:
        for stage in per_k:
            for ref in ("mtcnn", "decode"):
                if ref in row:
                    row[f"{stage}_k{k}_vs_{ref}"] = row[f"{stage}_k{k}"]["fps"] / row[ref]["fps"]
    return row


def looped_clip(path, times, out_dir):
    """The clip concatenated ``times`` times (ffmpeg stream copy)."""
    import imageio_ffmpeg

    out = Path(out_dir) / f"{Path(path).stem}_x{times}{Path(path).suffix}"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-stream_loop", str(times - 1), "-i", str(path), "-c", "copy", str(out)],
                   check=True)
    return out


def bench_memory(path, device="cpu", batch=32, repeats=(1, 4, 16), detect_every=1):
    """Peak RSS and frames/s of `generate` (the default detector, detection
    on every ``detect_every``-th frame: 1, the default) on the clip looped
    1x, 4x, 16x: flat memory means streaming."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in repeats:
            clip = looped_clip(path, times, tmp)
            res = run_stage_in_subprocess("generate", clip, device, batch, detect_every)
            rows.append({"repeats": times, "detect_every": detect_every, **res})
    return rows


def accuracy_clip(path, batch=16, **kwargs):
    """The default detector against full per-frame detection on one clip.

    Both pipelines see the same batches. Returns the mean and least IoU of
    the main subject's boxes where both found it, the frames whose face /
    no-face mark differs, the largest jump of the default's box centre
    between consecutive frames (in face sizes), and the share of frames the
    default detected in full.
    """
    import torch

    from end2you_visual.faces import FacePipeline
    from end2you_visual.video import VideoFrames

    torch.set_num_threads(1)
    video = VideoFrames(path, batch)
    fast = FacePipeline(fps=video.info.fps, batch_size=batch, **kwargs)
    full = FacePipeline(fps=video.info.fps, batch_size=batch, detector="full", **kwargs)
    boxes, found = {"fast": [], "full": []}, {"fast": [], "full": []}
    seconds = {"fast": 0.0, "full": 0.0}
    for start, frames in video:
        for name, pipeline in (("fast", fast), ("full", full)):
            began = time.perf_counter()
            faces = pipeline.process(frames)
            seconds[name] += time.perf_counter() - began
            boxes[name].append(faces.boxes)
            found[name].append(faces.found)
    a, b = np.concatenate(boxes["fast"]), np.concatenate(boxes["full"])
    fa, fb = np.concatenate(found["fast"]), np.concatenate(found["full"])
    both = fa & fb
    overlap = iou(a[both], b[both]) if both.any() else np.zeros(0)
    centre = (a[:, :2] + a[:, 2:]) / 2
    size = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    step = np.hypot(*(centre[1:] - centre[:-1]).T) / size[:-1]
    step = step[fa[1:] & fa[:-1]]
    return {"clip": Path(path).name, "frames": int(len(fa)),
            "found_default": int(fa.sum()), "found_full": int(fb.sum()),
            "mean_iou": float(overlap.mean()) if len(overlap) else None,
            "min_iou": float(overlap.min()) if len(overlap) else None,
            "marks_differ": np.flatnonzero(fa != fb).tolist(),
            "max_jump_face_sizes": float(step.max()) if len(step) else None,
            "full_detections_default": int(fast.full_detections),
            "fps_default_faces": len(fa) / seconds["fast"],
            "fps_full_faces": len(fa) / seconds["full"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1])
    parser.add_argument("--memory", default=None, help="clip for the 1x/4x/16x memory run")
    parser.add_argument("--accuracy", action="store_true",
                        help="compare the default detector with full detection instead")
    parser.add_argument("--people", action="store_true",
                        help="--faces all against MTCNN alone instead")
    args = parser.parse_args(argv)
    if args.people:
        report = {"people": [bench_people(c, args.device, args.batch) for c in args.clips]}
        print(json.dumps(report, indent=2))
        return report
    if args.accuracy:
        report = {"accuracy": []}
        for clip in args.clips:
            report["accuracy"].append(accuracy_clip(clip, args.batch, device=args.device))
            print(json.dumps(report["accuracy"][-1]), flush=True)
        return report
    report = {"clips": [bench_clip(c, args.device, args.batch, args.detect_every)
                        for c in args.clips]}
    if args.memory:
        report["memory"] = bench_memory(args.memory, args.device, args.batch)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
