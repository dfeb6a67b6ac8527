"""`e2y-visual`: the command group. Each subcommand lives in its own module.

One way to fail: the library raises :class:`~end2you_visual.errors.InputError`
(bad files, options, recipes, devices, outputs) and the group turns it into
``Error: <file or option>: <problem>`` and exit status 1, never a traceback.
"""
import warnings

import click

from end2you_visual import __version__
from end2you_visual.errors import InputError


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"Warning: {message}\n"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(_one_line_warning(message, category, filename, lineno, line), err=True,
               nl=False)


class _Group(click.Group):
    """A click group whose commands report user errors and warnings in one line,
    listed in the order of the workflow (not alphabetically)."""

    def list_commands(self, ctx):
        return list(self.commands)

    def invoke(self, ctx):
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
def cli():
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


def _register():
    # Imported here so that each command module stays independent.
    from . import evaluate, extract, generate, predict, test, train, zoo

    cli.add_command(generate.generate)
    cli.add_command(zoo.zoo)
    cli.add_command(train.train)
    cli.add_command(test.test)
    cli.add_command(evaluate.evaluate)
    cli.add_command(predict.predict)
    cli.add_command(extract.extract)
    for name, text in SHORT_HELP.items():
        cli.commands[name].short_help = text


_register()


def main():
    cli()


if __name__ == "__main__":
    main()
