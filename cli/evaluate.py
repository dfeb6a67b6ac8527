"""`e2y-visual evaluate`: fit or apply the post-processing chain
(a thin front end over :mod:`end2you_visual.evaluation`)."""
from __future__ import annotations

import click

from end2you_visual.labels import INTERPOLATIONS


@click.command()
@click.option("--pred", "pred_paths", multiple=True, required=True, type=click.Path(exists=True),
              help="Prediction CSV or folder of CSVs (time, outputs, optional face_found). "
                   "Repeat for more.")
@click.option("--labels", "label_paths", multiple=True, type=click.Path(exists=True),
              help="Label CSV or folder (time, label columns named like the outputs), "
                   "matched to predictions by file stem, e.g. the labels/ folder of "
                   "`e2y-visual test`. Repeat for more.")
@click.option("--interpolation", type=click.Choice(list(INTERPOLATIONS)), default="previous",
              show_default=True,
              help="Label value at a prediction's time, for label rows at other times "
                   "(as in generate).")
@click.option("--apply", "chain_path", type=click.Path(exists=True, dir_okay=False),
              help="Apply this saved chain JSON instead of fitting one.")
@click.option("--out", required=True, type=click.Path(),
              help="Fit: the chain JSON to write. --apply: folder for the processed CSVs.")
@click.option("--outputs", default=None,
              help="Comma-separated output columns to use (default: all but "
                   "time/face_found/top_class).")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False),
              help="Also write the pooled and per-file metrics before/after the chain, "
                   "over the face frames and over all frames, as JSON.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing chain file, processed CSVs or metrics file "
                   "(else refused).")
def evaluate(pred_paths: tuple[str, ...], label_paths: tuple[str, ...], interpolation: str,
             chain_path: str | None, out: str, outputs: str | None, metrics_path: str | None,
             overwrite: bool) -> None:
    """Fit the validation-chosen post-processing chain (median filter,
    centring, scaling, time shift; each kept only if it raises validation
    CCC) on validation predictions and labels, or apply a saved chain to
    test predictions with --apply."""
    from end2you_visual.errors import ArgumentConflict
    from end2you_visual.evaluation import evaluate as run_evaluate

    try:
        result = run_evaluate(pred_paths, out, label_paths, chain=chain_path,
                              outputs=outputs.split(",") if outputs else None,
                              interpolation=interpolation, metrics_path=metrics_path,
                              overwrite=overwrite)
    except ArgumentConflict as err:
        raise click.UsageError(str(err)) from None
    if result.fitted:
        click.echo(result.chain.table())
        click.echo(f"wrote {out}")
    else:
        click.echo(f"wrote {len(result.written)} file(s) to {out}")
    for line in result.ccc_lines():
        click.echo(line)
