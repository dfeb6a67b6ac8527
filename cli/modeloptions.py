"""The options that `e2y-visual predict` and `extract` share: their inputs, the
model to run and the output folder."""
from typing import Callable

import click

from end2you_visual.registry import DEFAULT_MODEL

__all__ = ["model_run_options"]


def model_run_options(inputs: str, out_help: str) -> Callable[[Callable], Callable]:
    """Decorator: the INPUTS argument (named ``inputs``: files or folders that
    exist), ``--model`` (a registered name or a checkpoint file, passed as
    ``model_name``; default :data:`~end2you_visual.registry.DEFAULT_MODEL`)
    and ``--out`` (the output folder, ``out_dir``; help text ``out_help``),
    in that order."""
    decorators = [
        click.argument(inputs, nargs=-1, required=True, type=click.Path(exists=True)),
        click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
                     help="A registered model name (e2y-visual zoo list) or a checkpoint file; "
                          "the default is the zoo's most accurate CPU model."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                     help=out_help),
    ]

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply
