"""`python -m bench` (or `make bench`): every benchmark, JSON + a Markdown table.

    python -m bench --device cuda --clips ../shared/data/clips --out bench_out
    python -m bench --device cpu --small          # CPU: tiny model sizes

Each figure is a ratio against a reference measured in the same run:
generation against MTCNN alone, training and inference against the
model-only ceiling (same model and batch, random tensors on the device).
"""
import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from . import generation
from .report import markdown

DEFAULT_CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "crowd_1080p.mp4",
                 "carphone_pristine.mp4")


def _clips(folder):
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    found = [folder / name for name in DEFAULT_CLIPS if (folder / name).exists()]
    return found or sorted(folder.glob("*.mp4"))[:4]


def _machine(device):
    import torch

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    return {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
            "torch": torch.__version__, "gpu": gpu,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", default="tests/data",
                        help="a clip or a folder of clips (e.g. ../shared/data/clips)")
    parser.add_argument("--small", action="store_true",
                        help="small model sizes (a CPU run); default: the paper's sizes")
    parser.add_argument("--only", nargs="+", default=["generation", "training", "inference"],
                        choices=["generation", "training", "inference", "fusion"])
    parser.add_argument("--batch", type=int, default=16, help="generation batch (64 on a GPU)")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": _machine(args.device), "command": "python -m bench " +
              " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    started = time.perf_counter()
    if "generation" in args.only:
        clips = _clips(args.clips)
        # MTCNN alone (End2You's method), decode alone, `generate` with full
        # per-frame detection and with the default (tracked) detector.
        report["generation"] = [generation.bench_clip(c, args.device, args.batch, (1,))
                                for c in clips]
        report["generation_memory"] = generation.bench_memory(clips[0], args.device, args.batch)
        # --faces all on a two-person composite and the multi-person clips.
        shared = Path(args.clips) if Path(args.clips).is_dir() else Path(args.clips).parent
        people = [generation.two_person_composite(out, shared)] + \
            [shared / n for n in ("crowd_1080p.mp4", "short_hamilton_clip.mp4")]
        report["people"] = [generation.bench_people(c, args.device, args.batch)
                            for c in people if c is not None and Path(c).is_file()]
    if "training" in args.only:
        from . import training

        sizes = dict(arch="resnet18", batch=2, window=16, size=64, steps=5) if args.small \
            else dict(arch="resnet50", batch=2, window=150, size=150, steps=30)
        report["training"] = training.run(device=args.device, **sizes)
    if "inference" in args.only:
        from . import inference

        sizes = dict(arch="resnet18", batch=2, window=16, size=64, steps=5) if args.small \
            else dict(arch="resnet50", batch=8, window=150, size=150, steps=20)
        report["inference"] = inference.run(device=args.device, **sizes)
    if "fusion" in args.only:
        from . import fusion

        sizes = dict(arch="resnet18", batch=2, window=16, size=64, steps=5) if args.small \
            else dict(arch="resnet50", batch=2, window=150, size=150, steps=20)
        report["fusion"] = fusion.run(device=args.device, **sizes)
    report["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
