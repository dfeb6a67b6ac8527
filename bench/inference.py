"""Inference benchmark: `test` frames/s end to end against the model-only ceiling.

Measured in one run, same model, same batch (``batch`` sequences x
``window`` frames per forward pass), same precision:

- ``model_only_fps``: the ceiling: random uint8 frames already on the
  device, forward passes back to back (bf16 autocast + channels_last on CUDA,
  ``torch.inference_mode``), state carried as in `test`;
- ``e2e_fps``: :func:`end2you_visual.testrun.run_test` over a folder of
  synthetic HDF5 files written with ``SequenceWriter`` (one sequence of
  ``steps x window`` frames per file, ``batch`` files): reading from disk,
  host-to-device copies, the model, outputs back (the time ``run_test``
  reports for its predictions);
- ``e2e_cold_fps``: the same after asking the kernel to drop the files from
  its page cache (``posix_fadvise DONTNEED``): reads from the disk itself;
- ``run_test_fps``: the whole ``run_test`` call (opening files, reading
  labels, predictions, metrics, CSVs and predictions.h5 written);
- ``e2e_vs_model_only``: ``e2e_fps / model_only_fps``.

``python -m bench.inference --device cuda`` (ResNet-50 + LSTM, 150x150,
bf16) prints JSON; ``--device cpu --arch resnet_tiny --size 32 --window 16
--steps 3`` is a quick CPU check. ``--check`` only compares `test`'s
predictions on the device (windows, lanes, padding) with a float64 CPU pass
(relative errors: ~1e-4 in fp32 with TF32 convolutions, ~5e-3 in bf16).
"""
import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from end2you_visual.hdf5 import SequenceWriter
from end2you_visual.devices import resolve_device
from end2you_visual.inference import autocast_for, prepare_model
from end2you_visual.models import build_model
from end2you_visual.testrun import run_test

LABELS = ["arousal", "valence"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_folder(folder, files, frames_per_file, size, window, seed=0):
    """``files`` HDF5 files of one labelled sequence each, written window by window."""
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (window, size, size, 3), dtype=np.uint8)
    for i in range(files):
        with SequenceWriter(Path(folder) / f"clip{i:03d}.h5", size, LABELS, "continuous") as w:
            w.begin_sequence(f"clip{i:03d}", source="synthetic", fps=30.0)
            for start in range(0, frames_per_file, window):
                n = min(window, frames_per_file - start)
                # Different pixels per window and file (a rolled block: cheap).
                frames = np.roll(block[:n], shift=i * 7 + start, axis=1)
                w.append(frames, (start + np.arange(n)) / 30.0,
                         rng.normal(size=(n, len(LABELS))).astype(np.float32))
            w.end_sequence()
            w.commit()


def drop_page_cache(folder):
    """Ask the kernel to forget the files' pages (no root needed); False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in Path(folder).glob("*.h5"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def model_only(model, device, batch, window, size, steps, precision="auto", warmup=3):
    """Frames/s of forward passes on random uint8 frames already on the device."""
    base = prepare_model(model, device)
    autocast = autocast_for(device, precision)
    x = torch.randint(0, 256, (batch, window, size, size, 3), dtype=torch.uint8, device=device)
    state = None
    with torch.inference_mode():
        for k in range(warmup + steps):
            if k == warmup:
                _sync(device)
                started = time.perf_counter()
            with autocast():
                out, state = model(x, state, return_state=True)
            out = base.activate(out.float())
        _sync(device)
    return batch * window * steps / (time.perf_counter() - started)


def check(device="cuda", precision="auto"):
    """Relative error of `test`'s predictions (windows, lanes, static shapes) on
    ``device`` against one float64 CPU pass per sequence; a dict of errors."""
    from end2you_visual.data import SequenceFile
    from end2you_visual.inference import predict_sequences

    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=16, num_layers=2,
                        input_size=32).eval()
    lengths = [37, 5, 0, 20, 64, 150, 1]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.h5"
        with SequenceWriter(path, 32, LABELS, "continuous") as w:
            for i, n in enumerate(lengths):
                w.begin_sequence(f"s{i}", fps=25.0)
                w.append(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) / 25,
                         rng.normal(size=(n, 2)))
                w.end_sequence()
            w.commit()
        f = SequenceFile(path)
        with torch.no_grad():
            ref = [model.double()(torch.from_numpy(f.read(s).frames)[None])[0].numpy()
                   for s in f.sequences if s.length]
        model.float()
        errors = {}
        for batch, window, static in ((1, 16, False), (3, 7, False), (8, 16, True),
                                      (4, None, False)):
            outs = predict_sequences(model, [(f, s) for s in f.sequences], window=window,
                                     lanes=batch, device=device, precision=precision,
                                     activate=False, static_shapes=static)
            outs = [o for o in outs if len(o)]
            errors[f"batch{batch}_window{window}_static{int(static)}"] = max(
                float(np.linalg.norm(o - r) / np.linalg.norm(r)) for o, r in zip(outs, ref))
        f.close()
    return errors


def run(device="cuda", arch="resnet50", batch=8, window=150, size=150, steps=20, compile=False,
        precision="auto", workers=None, folder=None, cold=True):
    """Measure the model-only ceiling and `test` end to end; returns a flat dict."""
    device = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(arch, outputs=len(LABELS), label_names=LABELS, input_size=size).eval()
    runner = torch.compile(model) if compile else model
    result = {"device": str(device), "arch": arch, "batch": batch, "window": window,
              "size": size, "steps": steps, "compile": bool(compile),
              "precision": "bf16" if precision == "bf16" or (
                  precision == "auto" and device.type == "cuda") else "fp32",
              "frames": batch * window * steps}
    result["model_only_fps"] = model_only(runner, device, batch, window, size, steps, precision)

    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="e2y-bench-")) if own else Path(folder)
    try:
        data, out = folder / "data", folder / "out"
        data.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_folder(data, batch, steps * window, size, window)
        result["write_s"] = time.perf_counter() - started
        result["data_gb"] = sum(p.stat().st_size for p in data.glob("*.h5")) / 1e9
        options = dict(window=window, lanes=batch, device=device, precision=precision,
                       workers=workers, static_shapes=bool(compile), overwrite=True)
        run_test(runner, [data], out, **options)  # warm-up: file cache, allocator
        started = time.perf_counter()
        res = run_test(runner, [data], out, **options)
        result["run_test_fps"] = res.frames / (time.perf_counter() - started)
        result["e2e_fps"] = res.frames_per_second
        if cold and drop_page_cache(data):
            res = run_test(runner, [data], out, **options)
            result["e2e_cold_fps"] = res.frames_per_second
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    result["e2e_vs_model_only"] = result["e2e_fps"] / result["model_only_fps"]
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=150)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--folder", default=None, help="where to write the synthetic data")
    parser.add_argument("--warm-only", action="store_true", help="skip the cold-cache run")
    parser.add_argument("--check", action="store_true",
                        help="only check predictions on the device against a float64 CPU pass")
    args = parser.parse_args(argv)
    if args.check:
        print(json.dumps(check(args.device, args.precision), indent=2))
        return
    print(json.dumps(run(args.device, args.arch, args.batch, args.window, args.size, args.steps,
                         args.compile, args.precision, args.workers, args.folder,
                         cold=not args.warm_only), indent=2))


if __name__ == "__main__":
    main()
