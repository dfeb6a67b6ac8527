"""`e2y-visual generate`: a thin front end over :func:`end2you_visual.generate.generate`."""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import click

from end2you_visual.audio import AUDIO_MODES, MAX_RATE, MIN_RATE
from end2you_visual.choices import COMPRESSIONS
from end2you_visual.generate import GenerateSettings, generate as run_generate
from end2you_visual.inputs import LAYOUTS
from end2you_visual.labels import ALIGN_MODES, INTERPOLATIONS
from end2you_visual.ranges import COUNT, INDEX, NON_NEGATIVE, POSITIVE, Range
from end2you_visual.shards import default_shard

from .faceoptions import face_options


class _AudioMode(click.Choice):
    """``--audio``'s choices; a bare ``--audio`` just before the inputs takes
    the first input as its value: the error says so."""

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> Any:
        if isinstance(value, str) and value not in self.choices and os.path.exists(value):
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}; a bare "
                      "--audio (required) takes the next word as its value: put it after the "
                      "inputs, or write --audio required", param, ctx)
        return super().convert(value, param, ctx)


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--layout", type=click.Choice(list(LAYOUTS)), default="auto",
              show_default=True, help="What SOURCE is (auto: decided by its content).")
@face_options()
@click.option("--align", type=click.Choice(list(ALIGN_MODES)), default="video",
              show_default=True, help="One output frame per video frame, or per label row.")
@click.option("--interpolation", type=click.Choice(list(INTERPOLATIONS)),
              default="previous", show_default=True, help="Label value at a frame's time.")
@click.option("--tolerance", default=1.0, show_default=True, type=NON_NEGATIVE.click_type(),
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
              type=POSITIVE.click_type(), help="Frame rate recorded for image sequences.")
@click.option("--shard-size", default=5000, show_default=True, type=COUNT.click_type(),
              help="Images or image sequences per shard file.")
@click.option("--compression", type=click.Choice(["none", *COMPRESSIONS]), default="none",
              show_default=True)
@click.option("--audio", type=_AudioMode(list(AUDIO_MODES)), default=None,
              is_flag=False, flag_value="required",
              help="Also store each video's audio track (mono) and each frame's sample "
                   "range; required (a bare --audio): a video without audio fails, "
                   "optional: its absence is recorded.")
@click.option("--audio-rate", default=16000, show_default=True,
              type=Range(MIN_RATE, MAX_RATE, integer=True).click_type(),
              help="Sample rate of the stored audio, Hz.")
@click.option("--workers", default=1, show_default=True, type=COUNT.click_type(),
              help="Files processed in parallel (worker processes, which end with the run).")
@click.option("--num-shards", type=COUNT.click_type(), default=None,
              help="Split the inputs over this many machines (default: torchrun's "
                   "$WORLD_SIZE, a SLURM array's task count, or 1; docs/scaling.md).")
@click.option("--shard-index", type=INDEX.click_type(), default=None,
              help="This machine's share (default: torchrun's $RANK, a SLURM array "
                   "task's index, or 0).")
@click.option("--overwrite", is_flag=True, help="Redo outputs that are already complete.")
@click.option("--preview", is_flag=True,
              help="Write a PNG contact sheet per output: sampled face crops (green) and "
                   "frames without a face (red).")
def generate(source: str, out_dir: str, layout: str, workers: int, num_shards: int | None,
             shard_index: int | None, overwrite: bool, preview: bool, label_columns: str | None,
             compression: str, **options: Any) -> None:
    """Turn videos or image folders (SOURCE: an input CSV of raw_file,label_file,
    a folder, or one video) into HDF5 face-crop sequences with aligned labels."""
    shard = default_shard(num_shards, shard_index)
    settings = GenerateSettings(
        label_columns=label_columns.split(",") if label_columns else None,
        compression=None if compression == "none" else compression, **options)
    results = run_generate(source, out_dir, settings, layout, workers,
                           *shard, overwrite, preview)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    click.echo(f"{counts['written']} written, {counts['skipped']} skipped (complete), "
               f"{counts['failed']} failed -> {out_dir}")
    for r in failed:
        click.echo(f"FAILED {', '.join(r.inputs)}: {r.error}", err=True)
    if failed:
        sys.exit(1)
