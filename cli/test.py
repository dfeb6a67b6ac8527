"""`e2y-visual test`: predictions and metrics on HDF5 data
(a thin front end over :func:`end2you_visual.testrun.run_test`)."""
from __future__ import annotations

import click

from end2you_visual.choices import PRECISIONS, SPLITS
from end2you_visual.ranges import COUNT, WINDOW


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "model_name", required=True,
              help="A registered model name (e2y-visual zoo list) or a checkpoint file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: predictions/*.csv, labels/*.csv, predictions.h5, "
                   "metrics.json, plots/.")
@click.option("--split", type=click.Choice(list(SPLITS)), default="all",
              show_default=True,
              help="Only the sequences of this split (the split column of generate's "
                   "input CSV; valid also takes val, dev, devel...).")
@click.option("--overwrite", is_flag=True,
              help="Replace the outputs of an earlier test run in --out (else refused).")
@click.option("--window", default=150, show_default=True, type=WINDOW.click_type(),
              help="Frames per forward pass, state carried across windows (0: whole sequences).")
@click.option("--lanes", default=8, show_default=True, type=COUNT.click_type(),
              help="Sequences predicted side by side.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto",
              show_default=True, help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--exclude-no-face", is_flag=True,
              help="Score only frames where a face was found.")
@click.option("--plot", is_flag=True, help="Also write PNGs: predictions vs labels, confusion.")
@click.option("--end2you-fps", type=float, default=None,
              help="Frame rate of End2You HDF5 files (they store none).")
@click.option("--label-names", default=None, metavar="NAME,NAME...",
              help="Comma-separated names of the label columns of End2You HDF5 files "
                   "(they call them label_0, label_1...), in column order, e.g. "
                   "arousal,valence.")
def test(data: tuple[str, ...], model_name: str, out_dir: str, split: str, overwrite: bool,
         window: int, lanes: int, device: str, precision: str, exclude_no_face: bool,
         plot: bool, end2you_fps: float | None, label_names: str | None) -> None:
    """Predict every sequence of the HDF5 files or folders DATA with a model,
    write per-sequence prediction CSVs (the input of `e2y-visual evaluate`),
    and score them when the data has labels."""
    from end2you_visual.testrun import run_test

    result = run_test(model_name, data, out_dir, window=window, device=device,
                      include_no_face=not exclude_no_face, plot=plot, lanes=lanes,
                      precision=precision, end2you_fps=end2you_fps, progress=True,
                      overwrite=overwrite, split=split,
                      label_names=label_names.split(",") if label_names is not None else None)
    click.echo(f"{len(result.sequences)} sequence(s), {result.frames} frames in "
               f"{result.seconds:.1f} s ({result.frames_per_second:,.0f} frames/s)")
    click.echo(f"wrote {len(result.csv_paths)} CSV file(s) to {out_dir}/predictions and "
               f"{result.predictions_path}")
    if result.label_paths:
        click.echo(f"wrote {len(result.label_paths)} label CSV file(s) to {out_dir}/labels")
    if result.metrics is not None:
        click.echo(result.headline())
        click.echo(f"wrote {result.metrics_path}")
    if result.plot_paths:
        click.echo(f"wrote {len(result.plot_paths)} plot(s) to {out_dir}/plots")
