"""`e2y-visual evaluate`: fit or apply the post-processing chain
(a thin front end over :mod:`end2you_visual.evaluation`)."""
import json

import click

from end2you_visual.files import atomic_write_text, check_writable
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
def evaluate(pred_paths, label_paths, interpolation, chain_path, out, outputs, metrics_path,
             overwrite):
    """Fit the validation-chosen post-processing chain (median filter,
    centring, scaling, time shift; each kept only if it raises validation
    CCC) on validation predictions and labels, or apply a saved chain to
    test predictions with --apply."""
    from end2you_visual.evaluation import (apply_chain_to_csvs, check_new_file,
                                           fit_chain_from_csvs)
    from end2you_visual.postprocess import Chain

    if chain_path is None and not label_paths:
        raise click.UsageError("fitting a chain needs --labels (or use --apply)")
    if chain_path is not None and outputs:
        raise click.UsageError("--outputs is taken from the chain with --apply")
    if metrics_path and not label_paths:
        raise click.UsageError("--metrics needs --labels")
    # Outputs are checked before any work: writable, and no finished one replaced unasked.
    if chain_path is None:
        check_new_file(out, "--out", overwrite)
    else:
        check_writable(out, "--out")
    if metrics_path:
        check_new_file(metrics_path, "--metrics", overwrite)
    if chain_path is None:
        chain, before, after = fit_chain_from_csvs(
            pred_paths, label_paths, outputs.split(",") if outputs else None, interpolation)
        chain.save(out)
        click.echo(chain.table())
        click.echo(f"wrote {out}")
    else:
        chain = Chain.load(chain_path)
        written, before, after = apply_chain_to_csvs(
            chain, pred_paths, out, label_paths or None, overwrite=overwrite,
            interpolation=interpolation)
        click.echo(f"wrote {len(written)} file(s) to {out}")
    if before is not None:
        for line in before.lines("CCC before") + after.lines("CCC after"):
            click.echo(line)
        if metrics_path:
            atomic_write_text(metrics_path, json.dumps(
                {"before": before.to_dict(), "after": after.to_dict()}, indent=2) + "\n")
