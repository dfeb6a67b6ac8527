"""`e2y-visual generate`: a thin front end over :func:`end2you_visual.generate.generate`."""
import sys

import click

from end2you_visual.generate import GenerateSettings, generate as run_generate
from end2you_visual.inputs import shard_from_env

from .faceoptions import face_options


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--layout", type=click.Choice(["auto", "csv", "videos", "image_classes",
                                             "image_sequences"]), default="auto",
              show_default=True, help="What SOURCE is (auto: decided by its content).")
@face_options()
@click.option("--align", type=click.Choice(["video", "labels"]), default="video",
              show_default=True, help="One output frame per video frame, or per label row.")
@click.option("--interpolation", type=click.Choice(["previous", "nearest", "linear"]),
              default="previous", show_default=True, help="Label value at a frame's time.")
@click.option("--tolerance", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds labels may start late or end early/late against the video.")
@click.option("--time-column", default=None, help="Label CSV time column (default: first).")
@click.option("--label-columns", default=None,
              help="Comma-separated label columns to keep (default: all but time).")
@click.option("--subject-pattern", default=None,
              help="Regular expression finding each item's subject in its path (group "
                   "'subject', else the first group, else the match), e.g. 'S\\d{3}' for "
                   "CK+ names; for train --split-by subject.")
@click.option("--skip-detection", is_flag=True,
              help="Inputs are already face crops (e.g. FER2013): only resize.")
@click.option("--image-fps", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Frame rate recorded for image sequences.")
@click.option("--shard-size", default=5000, show_default=True, type=click.IntRange(min=1),
              help="Images or image sequences per shard file.")
@click.option("--compression", type=click.Choice(["none", "gzip", "lzf"]), default="none",
              show_default=True)
@click.option("--audio", type=click.Choice(["required", "optional"]), default=None,
              is_flag=False, flag_value="required",
              help="Also store each video's audio track (mono) and each frame's sample "
                   "range; required (a bare --audio): a video without audio fails, "
                   "optional: its absence is recorded.")
@click.option("--audio-rate", default=16000, show_default=True,
              type=click.IntRange(min=1000, max=192000),
              help="Sample rate of the stored audio, Hz.")
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
