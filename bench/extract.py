"""`extract` benchmark: per-frame embeddings written per second, and its memory.

Measured in one run, same model, same batch, same device:

- ``model_only_fps``: the ceiling: ``model.features`` on random uint8
  frames already in memory, batches back to back (``torch.inference_mode``);
- ``extract_fps``: :func:`end2you_visual.extract.extract_features` over a
  synthetic HDF5 file of ``frames`` face crops (written with
  ``SequenceWriter``; one frame in 10 without a face), end to end:
  reading, the model, the output file written (HDF5, ``--dtype``);
- ``extract_vs_model_only``: ``extract_fps / model_only_fps``;
- ``peak_rss_mib``: peak resident memory of a fresh process extracting
  ``frames`` and ``4 x frames`` frames (streaming: the two should match).

``python -m bench.extract --device cpu`` (the zoo's ResNet-18, 48 px) prints
JSON; ``--model`` takes another registered name or checkpoint.
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
import torch

from end2you_visual.devices import resolve_device
from end2you_visual.extract import extract_features
from end2you_visual.hdf5 import SequenceWriter
from end2you_visual.zoo import load_pretrained


def write_file(path, frames, size, seed=0):
    """One unlabelled sequence of ``frames`` random crops, every 10th without a face."""
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (256, size, size, 3), dtype=np.uint8)
    with SequenceWriter(path, size) as writer:
        writer.begin_sequence(Path(path).stem, source="synthetic", fps=30.0)
        for start in range(0, frames, 256):
            n = min(256, frames - start)
            writer.append(np.roll(block, start, axis=1)[:n], (start + np.arange(n)) / 30.0,
                          face_found=(start + np.arange(n)) % 10 != 5)
        writer.end_sequence()
        writer.commit()
    return path


def model_only_fps(model, size, batch, device, repeats=10):
    frames = torch.randint(0, 256, (1, batch, size, size, 3), dtype=torch.uint8).to(device)
    with torch.inference_mode():
        model.features(frames)  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            model.features(frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return repeats * batch / (time.perf_counter() - started)


def extract_fps(model_name, frames, size, batch, dtype, device):
    with tempfile.TemporaryDirectory() as tmp:
        source = write_file(Path(tmp) / "clip.h5", frames, size)
        started = time.perf_counter()
        (result,) = extract_features([source], model_name, Path(tmp) / "out", dtype=dtype,
                                     batch_size=batch, device=device)
        seconds = time.perf_counter() - started
    return result.frames / seconds


def peak_rss(model_name, frames, size, batch, dtype, device):
    """Peak RSS (MiB) of a fresh process running one extraction of ``frames``."""
    out = subprocess.run([sys.executable, "-m", "bench.extract", "--child", str(frames),
                          "--model", model_name, "--size", str(size), "--batch", str(batch),
                          "--dtype", dtype, "--device", str(device)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-fer2013-cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=48, help="crop side (the model's input)")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.child is not None:
        extract_fps(args.model, args.child, args.size, args.batch, args.dtype, device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mib": round(peak, 1)}))
        return
    model = load_pretrained(args.model, device=str(device)).eval()
    ceiling = model_only_fps(model, args.size, args.batch, device)
    end_to_end = extract_fps(args.model, args.frames, args.size, args.batch, args.dtype, device)
    report = {
        "command": "python -m bench.extract " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "arch": model.config["arch"], "device": str(device),
        "size": args.size, "batch": args.batch, "dtype": args.dtype, "frames": args.frames,
        "threads": torch.get_num_threads(),
        "model_only_fps": round(ceiling, 1), "extract_fps": round(end_to_end, 1),
        "extract_vs_model_only": round(end_to_end / ceiling, 3),
        "peak_rss_mib": {str(n): peak_rss(args.model, n, args.size, args.batch, args.dtype,
                                          device) for n in (args.frames, 4 * args.frames)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
