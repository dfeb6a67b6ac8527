"""End2You's own visual generator next to ours: frames/s and peak RSS, one run.

    python -m bench.end2you CLIP --end2you-python .venv-end2you/bin/python \\
        [--labels LABEL_CSV] [--end2you-src PATH] [--out FILE.json]

End2You (github.com/end2you/end2you) is not part of this repository and is
never imported here: its generator runs under the Python of the venv where
the user installed it (``make end2you-venv``), through a small driver passed
with ``-c`` that calls its public classes (``FileReader``, ``VisualGenerator``,
``write_data_files``). ``--end2you-src`` puts a source checkout on that
Python's ``PYTHONPATH`` instead of an installed copy.

Each measurement runs in a fresh process, so that its peak RSS
(``ru_maxrss``) is its own:

- ``end2you``: End2You's ``VisualGenerator`` on the clip and label CSV
  (defaults as its ``generate`` command uses them: fps 30, 96x96 crops). It
  keeps ``int(30 * label step)`` frames per label step, one for 40 ms labels,
  as float32; ``all_zero_frames`` counts the frames it wrote as zeros (it
  does so, silently, when detection or cropping raises);
- ``ours_k1`` / ``ours_k3``: our `generate` on the same clip and labels,
  default settings and ``detect_every=3``; every video frame is written.

Both are warmed up (models loaded, one detection) before the timed call.
``cpu_seconds`` is the CPU time of the timed call (all threads): when its
ratio to ``seconds`` drops from one run to the next, something else had the CPU.
``video_fps`` is the clip's frames over the timed seconds (the labels cover
the whole clip); ``written_fps`` is the frames each one wrote.

Without ``--labels``, a 40 ms label CSV (time,arousal,valence) covering each
clip is written into a temporary folder; ``--labels`` is used for every clip.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LABEL_STEP = 0.04

# Runs under End2You's Python: argv = clip, label CSV, work folder.
END2YOU_DRIVER = r'''
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
import h5py
import numpy as np
from moviepy.editor import VideoFileClip
from end2you.data_generator import FileReader, VisualGenerator

clip, labels, work = sys.argv[1:4]
work = Path(work)
inputs = work / "input.csv"
inputs.write_text("raw_file,label_file\n%s,%s\n" % (clip, labels))
generator = VisualGenerator(save_data_folder=str(work / "hdf5"), input_file=str(inputs),
                            reader=FileReader(","), labelfile_reader=FileReader(","))
video = VideoFileClip(clip)
generator.detector.extract_and_resize_face(np.array([video.get_frame(0)]))  # warm-up
video.close()
setup = time.perf_counter() - t0
start, cpu = time.perf_counter(), time.process_time()
generator.write_data_files()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
(out,) = sorted((work / "hdf5").glob("*.hdf5"))
with h5py.File(out, "r") as f:
    visual = f["visual"]
    steps, per_step = visual.shape[:2]
    zero = sum(int(not np.any(visual[i, j])) for i in range(steps) for j in range(per_step))
    info = {"shape": list(visual.shape), "dtype": str(visual.dtype),
            "num_samples": int(f.attrs["num_samples"])}
import end2you, torch
print(json.dumps({"frames_written": steps * per_step, "label_steps": steps,
                  "frames_per_step": per_step, "all_zero_frames": zero, "seconds": seconds,
                  "cpu_seconds": cpu,
                  "setup_seconds": setup, "output_mb": out.stat().st_size / 2**20,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "hdf5": info, "torch": torch.__version__, "numpy": np.__version__,
                  "end2you": str(Path(end2you.__file__).parent)}))
'''


def write_labels(clip, folder, step=LABEL_STEP):
    """A time,arousal,valence CSV every ``step`` s from 0 to the clip's end."""
    from end2you_visual.video import probe_video

    info = probe_video(clip, count=True)
    # The last row must not pass the clip's end: End2You cuts a subclip
    # between consecutive rows, and moviepy refuses one past the end.
    last = min(info.n_frames / info.fps, info.duration or np.inf)
    times = np.arange(int(np.floor(last / step + 1e-6)) + 1) * step
    path = Path(folder) / f"{Path(clip).stem}_labels.csv"
    rows = [f"{t:.2f},{0.5 * np.sin(t):.4f},{0.5 * np.cos(t):.4f}" for t in times]
    path.write_text("time,arousal,valence\n" + "\n".join(rows) + "\n")
    return path


def ours_child(clip, labels, work, detect_every):
    """Our `generate` on ``clip`` + ``labels``, warmed up; runs in a fresh process."""
    from end2you_visual.faces import FacePipeline
    from end2you_visual.generate import GenerateSettings, generate
    from end2you_visual.video import iter_frame_batches

    t0 = time.perf_counter()
    settings = GenerateSettings(detect_every=int(detect_every))
    _, frames = next(iter(iter_frame_batches(clip, settings.batch_size)))
    FacePipeline(batch_size=settings.batch_size).process(frames)  # warm-up, as bench.generation
    setup = time.perf_counter() - t0
    inputs = Path(work) / "input.csv"
    inputs.write_text(f"raw_file,label_file\n{clip},{labels}\n")
    start, cpu = time.perf_counter(), time.process_time()
    (result,) = generate(inputs, Path(work) / "out", settings, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if result.status != "written":
        raise RuntimeError(f"{clip}: {result.error}")
    return {"frames_written": result.frames, "faces_found": result.faces_found,
            "seconds": seconds, "cpu_seconds": cpu, "setup_seconds": setup,
            "output_mb": Path(result.output).stat().st_size / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _last_json(proc, what):
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_end2you(python, clip, labels, src=None):
    """End2You's generator in a fresh process of ``python``, in a scratch folder."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(src).resolve()),
                                                        env.get("PYTHONPATH")) if p)
    python = os.path.abspath(python)  # not resolve(): a venv's python is a symlink
    with tempfile.TemporaryDirectory() as work:  # End2You writes generator.log in its cwd
        proc = subprocess.run([python, "-c", END2YOU_DRIVER, str(clip), str(labels), work],
                              cwd=work, env=env, capture_output=True, text=True, check=False)
    return _last_json(proc, f"End2You on {clip}")


def run_ours(clip, labels, detect_every):
    code = ("import json,sys;from bench.end2you import ours_child;"
            "print(json.dumps(ours_child(*sys.argv[1:])))")
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run([sys.executable, "-c", code, str(clip), str(labels), work,
                               str(detect_every)], cwd=REPO, capture_output=True, text=True,
                              check=False)
    return _last_json(proc, f"ours (detect_every={detect_every}) on {clip}")


def _rates(entry, video_frames):
    entry["video_fps"] = video_frames / entry["seconds"]
    entry["written_fps"] = entry["frames_written"] / entry["seconds"]
    return entry


def bench_clip(clip, python, labels=None, src=None, detect_every=(1, 3)):
    """One row: End2You and ours on the same clip and labels, with ratios ours / End2You."""
    from end2you_visual.video import probe_video

    clip = Path(clip).resolve()
    info = probe_video(clip, count=True)
    with tempfile.TemporaryDirectory() as tmp:
        label_csv = Path(labels).resolve() if labels else write_labels(clip, tmp)
        row = {"clip": clip.name, "video_frames": info.n_frames, "fps": info.fps,
               "size": f"{info.width}x{info.height}", "labels": str(label_csv) if labels else
               f"generated: every {LABEL_STEP} s, {len(label_csv.read_text().splitlines()) - 1} rows"}
        try:
            row["end2you"] = _rates(run_end2you(python, clip, label_csv, src), info.n_frames)
        except RuntimeError as err:
            row["end2you"] = {"error": str(err)}
        for k in detect_every:
            row[f"ours_k{k}"] = _rates(run_ours(clip, label_csv, k), info.n_frames)
    ref = row["end2you"]
    if "error" not in ref:
        for k in detect_every:
            ours = row[f"ours_k{k}"]
            row[f"ours_k{k}_vs_end2you"] = {
                "video_fps": ours["video_fps"] / ref["video_fps"],
                "written_fps": ours["written_fps"] / ref["written_fps"],
                "peak_rss": ours["peak_rss_mb"] / ref["peak_rss_mb"]}
    return row


def _machine():
    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--labels", default=None,
                        help="label CSV (time + labels) for every clip; default: 40 ms, generated")
    parser.add_argument("--end2you-python", required=True,
                        help="the Python of the venv where End2You is installed")
    parser.add_argument("--end2you-src", default=None,
                        help="End2You source checkout, put on that Python's PYTHONPATH")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = {"machine": _machine(), "command": "python -m bench.end2you " + " ".join(
        argv if argv is not None else sys.argv[1:]),
              "clips": [bench_clip(c, args.end2you_python, args.labels, args.end2you_src,
                                   args.detect_every) for c in args.clips]}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
