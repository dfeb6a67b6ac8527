"""Audiovisual training throughput against visual-only, in one run.

One synthetic HDF5 folder (``SequenceWriter``, frames plus a 16 kHz audio
track, 25 fps) is trained on by the real training loop (:func:`train`, the
code ``e2y-visual train`` runs) three times, same CNN, window, batch,
device and precision: ``--modality visual``, ``audiovisual`` and ``audio``.
Each run has two epochs of ``steps`` steps; the first warms up (loader
workers, allocator, cuDNN autotuning), the second is reported (its
``train_fps``: frames/s of the training steps, reading included).

``av_vs_visual`` = audiovisual / visual frames/s: what adding the audio
branch (its reading and its 1-D CNN) costs.

    python -m bench.fusion --device cpu --arch resnet18 --window 16 --size 64 --steps 5
    python -m bench.fusion --device cuda        # the paper's sizes
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from end2you_visual.hdf5 import SequenceWriter

RATE, FPS = 16000, 25.0
MODALITIES = ("visual", "audiovisual", "audio")


def write_folder(folder, sequences, length, size, seed=0):
    """``sequences`` labelled sequences of ``length`` random frames with audio."""
    rng = np.random.default_rng(seed)
    per_frame = int(RATE / FPS)
    for q in range(sequences):
        with SequenceWriter(Path(folder) / f"av{q}.h5", size, ["arousal", "valence"],
                            "continuous", audio_rate=RATE) as w:
            w.begin_sequence(f"s{q}", fps=FPS)
            w.append(rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
                     np.arange(length) / FPS, rng.uniform(-1, 1, (length, 2)))
            w.append_audio(rng.uniform(-0.5, 0.5, length * per_frame).astype(np.float32))
            w.end_sequence()
            w.commit()


def run(device="cpu", arch="resnet50", batch=2, window=150, size=150, steps=20, workers=2,
        data=None):
    """{modality: {train_fps, steps, frames}} and ``av_vs_visual``."""
    from end2you_visual.training import train

    with tempfile.TemporaryDirectory() as tmp:
        folder = data or Path(tmp) / "data"
        if data is None:
            folder.mkdir()
            write_folder(folder, sequences=max(8, batch * steps // 2 + 4),
                         length=window * 2 + 1, size=size)
        results = {}
        for modality in MODALITIES:
            history = train(train=[str(folder)], out_dir=str(Path(tmp) / modality),
                            modality=modality, arch=arch, window=window, batch_size=batch,
                            epochs=2, max_steps_per_epoch=steps, num_workers=workers,
                            device=device, progress=False, tensorboard=False,
                            valid_fraction=0.1).history
            results[modality] = {k: history[-1][k] for k in ("train_fps", "train_seconds")}
    results["av_vs_visual"] = results["audiovisual"]["train_fps"] / results["visual"]["train_fps"]
    results["sizes"] = dict(device=device, arch=arch, batch=batch, window=window, size=size,
                            steps=steps, audio_rate=RATE, fps=FPS)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--window", type=int, default=150)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", help="an HDF5 folder generated with --audio (else synthetic)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.device, args.arch, args.batch, args.window, args.size,
                         args.steps, args.workers, args.data), indent=2))


if __name__ == "__main__":
    main()
