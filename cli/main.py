"""`e2y-visual`: the command group. Each subcommand lives in its own module.

One way to fail: the library raises :class:`~end2you_visual.errors.InputError`
(bad files, options, recipes, devices, outputs) and the group turns it into
``Error: <file or option>: <problem>`` and exit status 1, never a traceback.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, TextIO

import click

from end2you_visual import __version__
from end2you_visual.errors import InputError


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    return f"Warning: {message}\n"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    click.echo(_one_line_warning(message, category, filename, lineno, line), err=True,
               nl=False)


class _Group(click.Group):
    """A click group whose commands report user errors and warnings in one line,
    listed in the order of the workflow (not alphabetically)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        # A command's module is imported when that command is used (or its
        # --help asked): the group's own --help imports none of them.
        if name not in COMMANDS:
            return None
        if name not in self.commands:
            module = importlib.import_module(f".{COMMANDS[name]}", __package__)
            command = getattr(module, name)
            command.short_help = SHORT_HELP[name]
            self.add_command(command)
        return self.commands[name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The short help is known without importing the commands.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SHORT_HELP[name]) for name in COMMANDS])

    def invoke(self, ctx: click.Context) -> Any:
        warnings.formatwarning = _one_line_warning  # also for forked worker processes
        with warnings.catch_warnings():
            # Shown by the group itself (stderr), even where the warnings
            # module's output is captured (pytest): one line, no source line.
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except InputError as err:
                raise click.ClickException(str(err)) from None
            except OSError as err:
                if err.filename is None:
                    raise
                raise click.ClickException(f"{err.filename}: {err.strerror or err}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="e2y-visual")
def cli() -> None:
    """End2You-style facial affect recognition in real-world video.

    The commands below are listed in the order of the workflow;
    `e2y-visual COMMAND --help` tells each one's options.
    """


SHORT_HELP = {
    "generate": "Raw videos / image folders + label CSVs -> HDF5 face crops.",
    "zoo": "List, inspect, fetch and export pretrained models.",
    "train": "Categorical pretraining and CCC fine-tuning.",
    "test": "Predictions and metrics on an HDF5 dataset.",
    "evaluate": "The validation-chosen post-processing chain.",
    "predict": "Per-frame predictions and a plot for your own videos.",
    "extract": "Per-frame embeddings of a model (HDF5, npy or CSV).",
}


# command -> its module in this package (defining a click command of that
# name), in the order of the workflow.
COMMANDS = {name: name for name in SHORT_HELP}


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
