"""`e2y-visual extract`: per-frame embeddings of a model (a thin front end over
:func:`end2you_visual.extract.extract_features`)."""
import click

from end2you_visual.choices import EXTRACT_FORMATS, FEATURE_DTYPES

from .faceoptions import face_options
from .modeloptions import model_run_options


@click.command()
@model_run_options("inputs", "Output folder: <input>.features.h5 (or .npy / .csv) per input.")
@click.option("--format", "fmt", type=click.Choice(list(EXTRACT_FORMATS)), default="hdf5",
              show_default=True, help="hdf5: features with timestamps, face_found, labels "
                                      "and the model's name and checksum; npy: the (N, F) "
                                      "array alone; csv: one row per frame.")
@click.option("--dtype", type=click.Choice(list(FEATURE_DTYPES)), default="float16",
              show_default=True, help="Precision of the stored features.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Frames embedded together (memory is bounded by it).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1...")
@face_options(exclude=("size", "device", "batch_size"), framed=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (else refused).")
def extract(inputs: tuple, model_name: str, out_dir: str, fmt: str, dtype: str, batch_size: int,
            device: str, overwrite: bool, **faces: object) -> None:
    """Per-frame embeddings (the model's CNN features) for INPUTS: generated
    HDF5 files, videos (through the face pipeline), or folders of either.
    Rows follow the input's frames; a frame without a face gets an empty
    (NaN) row."""
    from end2you_visual.extract import extract_features

    results = extract_features(inputs, model_name, out_dir, fmt=fmt, dtype=dtype,
                               batch_size=batch_size, device=device, overwrite=overwrite,
                               progress=True, announce=click.echo, **faces)
    for r in results:
        click.echo(f"{r.input}: {r.frames} frames ({r.faces_found} with a face) x "
                   f"{r.features} features, {r.seconds:.1f} s -> {r.output}")
