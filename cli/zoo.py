"""`e2y-visual zoo`: list, inspect and fetch pretrained models (over end2you_visual.zoo)."""
import json

import click

from end2you_visual import zoo as zoo_api
from end2you_visual.errors import InputError


def _status(weights):
    try:
        return str(zoo_api.locate(weights))
    except InputError:
        return "not fetched"


@click.group()
def zoo():
    """List, inspect and fetch pretrained models."""


@zoo.command("list")
def list_models():
    """Registered models: name, arch, head/outputs, where the file is."""
    entries = zoo_api.list_pretrained()
    if not entries:
        click.echo(f"No pretrained models registered in {zoo_api.registry_path()}.")
    for w in entries:
        fields = (w.name, w.arch, f"{w.head}/{w.outputs}", w.training_data or "-", _status(w))
        click.echo("\t".join(fields))


@zoo.command()
@click.argument("name")
def info(name):
    """Everything the registry says about NAME, and where its file is."""
    try:
        weights = zoo_api.get_weights(name)
    except InputError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps({**weights.as_dict(), "location": _status(weights)}, indent=2))


@zoo.command()
@click.argument("name")
@click.option("--from", "source", metavar="PATH_OR_URL",
              help="Where to copy or download the file from (default: the registry's url).")
@click.option("--force", is_flag=True, help="Fetch even if a verified copy is already there.")
def fetch(name, source, force):
    """Copy/download NAME's weights into the cache and verify their SHA-256."""
    try:
        path = zoo_api.fetch(name, source=source, force=force)
    except (InputError, OSError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{name}: {path} (SHA-256 verified)")
