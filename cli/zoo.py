"""`e2y-visual zoo`: list, inspect, fetch and export pretrained models (over end2you_visual.zoo)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import click

from end2you_visual import registry
from end2you_visual.errors import InputError
from end2you_visual.recipes import shipped_recipes


def _status(weights: registry.Weights) -> str:
    try:
        return str(registry.locate(weights))
    except InputError:
        return "not fetched"


@click.group()
def zoo() -> None:
    """List, inspect, fetch and export pretrained models."""


HEADER = ("name", "arch", "head/outputs", "training data", "file")


@zoo.command("list")
def list_models() -> None:
    """Registered models: name, arch, head/outputs, training data, where the file is."""
    entries = registry.list_pretrained()
    if not entries:
        looked = ", ".join(str(p) for p in registry.registry_paths())
        click.echo(f"No pretrained models registered (registries looked at: {looked}).")
        return
    click.echo("\t".join(HEADER))
    for w in entries:
        fields = (w.name, w.arch, f"{w.head}/{w.outputs}", w.training_data or "-", _status(w))
        click.echo("\t".join(fields))


@zoo.command()
def recipes() -> None:
    """Shipped training recipes: the name `train --config` takes, and what each is for."""
    for recipe in shipped_recipes():
        click.echo(f"{recipe.name}\t{recipe.description}")


@zoo.command()
@click.argument("name")
def info(name: str) -> None:
    """Everything the registry says about NAME, and where its file is."""
    weights = registry.get_weights(name)
    click.echo(json.dumps({**weights.as_dict(), "location": _status(weights)}, indent=2))


@zoo.command()
@click.argument("name")
@click.option("--from", "source", metavar="PATH_OR_URL",
              help="Where to copy or download the file from (default: the registry's url).")
@click.option("--force", is_flag=True, help="Fetch even if a verified copy is already there.")
def fetch(name: str, source: str | None, force: bool) -> None:
    """Copy/download NAME's weights into the home folder and verify their SHA-256.

    The home folder is $E2Y_VISUAL_HOME (default ~/.cache/end2you-visual).
    """
    from end2you_visual import zoo as zoo_api  # torch: imported when a model is fetched

    path = zoo_api.fetch(name, source=source, force=force)
    click.echo(f"{name}: {path} (SHA-256 verified)")


@zoo.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Weight file to write [default: NAME.pt in $E2Y_VISUAL_HOME, "
                   "or in $E2Y_VISUAL_PRETRAINED when set].")
@click.option("--compact/--full-precision", default=True, show_default=True,
              help="Store convolution and linear weights as int8 with per-channel scales.")
@click.option("--grey/--colour", default=None,
              help="Switch the model's grey-input setting [default: as trained].")
@click.option("--recipe", default="", help="Recipe, relative to the pretrained folder.")
@click.option("--training-data", default="", help="What it was trained on (free text).")
@click.option("--licence", default="", help="Licence of the weights (and data).")
@click.option("--description", default="", help="One line for `zoo list`/`zoo info`.")
@click.option("--metrics", "metrics_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON object of metrics for the entry [default: the checkpoint's "
                   "best-epoch validation metrics].")
@click.option("--replace", is_flag=True,
              help="Update an entry of the same name (and overwrite its weight file).")
def export(checkpoint: str, name: str, out: str | None, compact: bool, grey: bool | None,
           recipe: str, training_data: str, licence: str, description: str,
           metrics_file: str | None, replace: bool) -> None:
    """Publish a trained CHECKPOINT (e.g. runs/x/best.pt) in the zoo as NAME.

    The weights and their entry go to the home folder, $E2Y_VISUAL_HOME
    (default: ~/.cache/end2you-visual), or to $E2Y_VISUAL_PRETRAINED when set.
    """
    from end2you_visual import zoo as zoo_api  # torch: imported to read the checkpoint

    metrics = _read_metrics(metrics_file) if metrics_file else None
    entry = zoo_api.export(checkpoint, name, path=out, compact=compact, grey=grey,
                           replace=replace, metrics=metrics, recipe=recipe,
                           training_data=training_data, licence=licence,
                           description=description)
    size = cast(int, entry.size_bytes)  # export records the file's size
    click.echo(f"{entry.name}: {registry.locate(entry)} ({size / 1e6:.1f} MB, "
               f"sha256 {entry.sha256[:12]}...) registered in {registry.registry_path()}")


def _read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"--metrics {path}", f"not JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise InputError(f"--metrics {path}", "metrics must be a JSON object")
    return metrics
