"""`e2y-visual generate`: a thin front end over :func:`end2you_visual.generate.generate`."""
import sys

import click

from end2you_visual.generate import GenerateSettings, generate as run_generate
from end2you_visual.inputs import shard_from_env


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--layout", type=click.Choice(["auto", "csv", "videos", "image_classes",
                                             "image_sequences"]), default="auto",
              show_default=True, help="What SOURCE is (auto: decided by its content).")
@click.option("--size", default=150, show_default=True, type=click.IntRange(min=1),
              help="Side of the square crops.")
@click.option("--margin", default=0.2, show_default=True, type=click.FloatRange(min=0),
              help="Border around the face box, as a fraction of its side.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Frames decoded and detected together (64 or more on a GPU).")
@click.option("--detect-every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Detect on every k-th frame and interpolate the track in between.")
@click.option("--detect-scale", default=None,
              type=click.FloatRange(min=0, max=1, min_open=True),
              help="Detect on frames scaled by this factor (e.g. 0.5 for 1080p).")
@click.option("--min-face-size", default=20, show_default=True, type=click.IntRange(min=1),
              help="Smallest face searched for, in pixels.")
@click.option("--fill", type=click.Choice(["last", "zeros"]), default="last", show_default=True,
              help="What a frame without a face holds (its mask says no face either way).")
@click.option("--align", type=click.Choice(["video", "labels"]), default="video",
              show_default=True, help="One output frame per video frame, or per label row.")
@click.option("--interpolation", type=click.Choice(["previous", "nearest", "linear"]),
              default="previous", show_default=True, help="Label value at a frame's time.")
@click.option("--tolerance", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds labels may start late or end early/late against the video.")
@click.option("--time-column", default=None, help="Label CSV time column (default: first).")
@click.option("--label-columns", default=None,
              help="Comma-separated label columns to keep (default: all but time).")
@click.option("--skip-detection", is_flag=True,
              help="Inputs are already face crops (e.g. FER2013): only resize.")
@click.option("--image-fps", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Frame rate recorded for image sequences.")
@click.option("--shard-size", default=5000, show_default=True, type=click.IntRange(min=1),
              help="Images or image sequences per shard file.")
@click.option("--compression", type=click.Choice(["none", "gzip", "lzf"]), default="none",
              show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Files processed in parallel (worker processes, which end with the run).")
@click.option("--num-shards", type=click.IntRange(min=1), default=None,
              help="Split the inputs over this many machines (default: $WORLD_SIZE or 1).")
@click.option("--shard-index", type=click.IntRange(min=0), default=None,
              help="This machine's share (default: $RANK or 0).")
@click.option("--overwrite", is_flag=True, help="Redo outputs that are already complete.")
@click.option("--preview", is_flag=True,
              help="Write a PNG contact sheet per output: sampled face crops (green) and "
                   "frames without a face (red).")
def generate(source, out_dir, layout, workers, num_shards, shard_index, overwrite, preview,
             label_columns, compression, **options):
    """Turn videos or image folders (SOURCE: an input CSV of raw_file,label_file,
    a folder, or one video) into HDF5 face-crop sequences with aligned labels."""
    env_shards, env_index = shard_from_env()
    settings = GenerateSettings(
        label_columns=label_columns.split(",") if label_columns else None,
        compression=None if compression == "none" else compression, **options)
    results = run_generate(source, out_dir, settings, layout, workers,
                           env_shards if num_shards is None else num_shards,
                           env_index if shard_index is None else shard_index,
                           overwrite, preview)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    click.echo(f"{counts['written']} written, {counts['skipped']} skipped (complete), "
               f"{counts['failed']} failed -> {out_dir}")
    for r in failed:
        click.echo(f"FAILED {', '.join(r.inputs)}: {r.error}", err=True)
    if failed:
        sys.exit(1)
