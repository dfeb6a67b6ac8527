"""`e2y-visual`: the command group. Each subcommand lives in its own module."""
import click

from end2you_visual import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="e2y-visual")
def cli():
    """End2You-style facial affect recognition in real-world video.

    \b
    generate  raw videos / image folders + label CSVs -> HDF5 face crops
    zoo       list, inspect, fetch and export pretrained models
    train     categorical pretraining and CCC fine-tuning
    test      predictions and metrics on an HDF5 dataset
    evaluate  the validation-chosen post-processing chain
    predict   per-frame predictions and a plot for your own videos
    """


def _register():
    # Imported here so that each command module stays independent.
    from . import evaluate, generate, predict, test, train, zoo

    cli.add_command(generate.generate)
    cli.add_command(zoo.zoo)
    cli.add_command(train.train)
    cli.add_command(test.test)
    cli.add_command(evaluate.evaluate)
    cli.add_command(predict.predict)


_register()


def main():
    cli()


if __name__ == "__main__":
    main()
