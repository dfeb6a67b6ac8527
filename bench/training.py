"""Training throughput: end-to-end frames/s against the model-only ceiling.

Both measured in one run, same model, batch, precision and layout:

- ``ceiling``: random uint8 frames already on the device, forward + 1 - CCC
  loss + backward + Adam step, bf16 autocast (on CUDA) and channels_last:
  what the GPU can do with no data pipeline at all;
- ``train``: the real training loop (:meth:`Trainer.train_epoch`, the code
  ``e2y-visual train`` runs) reading an HDF5 folder through DataLoader
  workers. A synthetic folder is written with ``SequenceWriter`` when none is
  given. The first epoch warms up (workers, cuDNN autotuning); the second is
  measured.

``ratio`` = train / ceiling (the target on an H100 is >= 0.9); ``ratio_steady``
leaves out the wait for the epoch's first batch (a fixed cost per epoch, of
which a real epoch of thousands of steps has one, and this short one too).

    python -m bench.training --device cuda
    python -m bench.training --device cpu --arch resnet_tiny --window 16 --size 32 --steps 5
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(device, arch, batch, window, size, steps, warmup, precision, compile=False):
    """Model-only frames/s: random uint8 on the device, fwd + bwd + Adam."""
    from end2you_visual.ccc import ccc_loss
    from end2you_visual.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, outputs=2, input_size=size).to(device)
    model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    opt = torch.optim.Adam(model.parameters(), lr=4e-5)
    frames = torch.randint(0, 256, (batch, window, size, size, 3), dtype=torch.uint8,
                           device=device)
    labels = torch.rand(batch, window, 2, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            out = net(frames)
        loss = ccc_loss(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    return steps * batch * window / seconds, seconds / steps


def synthetic_folder(folder, n_windows, window, size, seed=0):
    """Write continuous-label sequences covering ``n_windows`` windows (+ validation)."""
    from end2you_visual.hdf5 import SequenceWriter

    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (window, size, size, 3), dtype=np.uint8)
    per_seq = 4
    n_seq = max(2, -(-n_windows // per_seq)) + 1  # + one for validation
    folder = Path(folder)
    with SequenceWriter(folder / "synthetic.h5", size, ["arousal", "valence"], "continuous") as w:
        for q in range(n_seq):
            w.begin_sequence(f"s{q}", fps=25.0,
                             metadata={"split": "valid" if q == n_seq - 1 else "train"})
            for k in range(per_seq):
                frames = np.roll(pool, q * per_seq + k, axis=0)
                w.append(frames, (np.arange(window) + k * window) / 25.0,
                         rng.uniform(-1, 1, (window, 2)).astype(np.float32))
            w.end_sequence()
        w.commit()
    return folder


def end_to_end(device, arch, batch, window, size, steps, precision, data_dir, num_workers,
               compile=False, augment=False):
    """The training loop's frames/s: one warm-up epoch, then a measured one.

    Each epoch is exactly ``steps`` batches (the sampler's list is cut to
    ``steps x batch`` windows), so no epoch stops half way with batches still
    in flight in the workers.
    """
    from end2you_visual.training import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        synthetic = data_dir is None
        if synthetic:
            data_dir = synthetic_folder(Path(tmp) / "data", steps * batch, window, size)
        config = TrainConfig(train=[str(data_dir)], out_dir=str(Path(tmp) / "run"), arch=arch,
                             window=window, batch_size=batch, epochs=2, device=str(device),
                             precision=precision, compile=compile, num_workers=num_workers,
                             progress=False, tensorboard=False, augment=augment,
                             split_by="split" if synthetic else "auto")
        trainer = Trainer(config)
        try:
            if len(trainer.indices) < steps * batch:
                raise ValueError(f"{data_dir}: {len(trainer.indices)} training windows, "
                                 f"fewer than steps x batch = {steps * batch}")
            trainer.train_sampler.indices = trainer.train_sampler.indices[:steps * batch]
            trainer.train_epoch(1)  # warm-up: workers start, cuDNN picks kernels
            stats = trainer.train_epoch(2)
        finally:
            trainer.close()
    seconds, wait = stats["train_seconds"], stats["first_batch_seconds"]
    return {"train_fps": stats["train_fps"], "steps": stats["steps"],
            "train_step_ms": 1000 * seconds / max(stats["steps"], 1),
            "first_batch_ms": 1000 * wait,
            # the epoch without its start (waiting for the first batch)
            "train_fps_steady": stats["frames"] / max(seconds - wait, 1e-9)}


def run(device="cuda", arch="resnet50", batch=2, window=150, size=150, steps=30,
        compile=False, data_dir=None, num_workers=None, warmup=5, precision="auto",
        augment=False):
    """Measure the ceiling and the end-to-end training frames/s in one run.

    Returns a flat dict: ``ceiling_fps``, ``train_fps``, ``ratio`` (train /
    ceiling), the step times in ms, and the settings.
    """
    device = torch.device(device)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ceil_fps, ceil_step = ceiling(device, arch, batch, window, size, steps, warmup, precision,
                                  compile)
    train = end_to_end(device, arch, batch, window, size, steps, precision, data_dir,
                       num_workers, compile, augment)
    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "none",
        "arch": arch, "batch": batch, "window": window, "size": size, "steps": steps,
        "precision": precision, "compile": bool(compile), "augment": bool(augment),
        "num_workers": num_workers, "data": str(data_dir) if data_dir else "synthetic",
        "ceiling_fps": ceil_fps, "train_fps": train["train_fps"],
        "ratio": train["train_fps"] / ceil_fps,
        "train_fps_steady": train["train_fps_steady"],
        "ratio_steady": train["train_fps_steady"] / ceil_fps,
        "ceiling_step_ms": 1000 * ceil_step, "train_step_ms": train["train_step_ms"],
        "first_batch_ms": train["first_batch_ms"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--window", type=int, default=150)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--augment", action="store_true", help="measure the pretraining path")
    parser.add_argument("--data-dir", default=None, help="HDF5 folder (default: synthetic)")
    args = parser.parse_args(argv)
    result = run(device=args.device, arch=args.arch, batch=args.batch, window=args.window,
                 size=args.size, steps=args.steps, compile=args.compile,
                 data_dir=args.data_dir, num_workers=args.num_workers, warmup=args.warmup,
                 precision=args.precision, augment=args.augment)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
