"""`e2y-visual predict`: per-frame predictions and a plot for your own videos
(a thin front end over :func:`end2you_visual.predict.predict_videos`)."""
from __future__ import annotations

from typing import Any, Dict, cast

import click

from end2you_visual.choices import PRECISIONS

from .faceoptions import face_options
from .modeloptions import model_run_options


@click.command()
@model_run_options("videos", "Output folder: <video>.csv and <video>.png per video.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto",
              show_default=True, help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@face_options(exclude=("size", "device"), framed=True)
@click.option("--no-plot", is_flag=True, help="Write only the CSVs.")
@click.option("--overwrite", is_flag=True,
              help="Replace earlier outputs of these videos in --out (else refused).")
def predict(videos: tuple[str, ...], model_name: str, out_dir: str, device: str, precision: str,
            no_plot: bool, overwrite: bool, **faces: Any) -> None:
    """Per-frame predictions of a model for VIDEOS (files or folders): one CSV
    per video (time, outputs, face_found, and top_class for a categorical
    model; empty cells where no face was found) and a plot of the outputs
    over time."""
    from end2you_visual.predict import predict_videos

    results = predict_videos(videos, model_name, out_dir, device=device, overwrite=overwrite,
                             precision=precision, plot=not no_plot, progress=True,
                             announce=click.echo, **faces)
    for r in results:
        if r.people is None:
            click.echo(f"{r.video}: {r.n_frames} frames, face in {r.faces_found}, "
                       f"{r.seconds:.1f} s -> {r.csv_path}")
            continue
        click.echo(f"{r.video}: {r.n_frames} frames, {len(r.people)} people, "
                   f"{r.seconds:.1f} s -> {r.timeline_path or 'no timeline (--no-plot)'}")
        for p in r.people:
            person = cast(Dict[str, Any], p.person)  # each of people has its person
            click.echo(f"  person {person['id']}: face in {p.faces_found} frames, "
                       f"mean position x {person['mean_x']:.2f} -> {p.csv_path}")
