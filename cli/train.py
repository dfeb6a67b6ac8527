"""`e2y-visual train`: a thin front end over :func:`end2you_visual.training.train`."""
from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TextIO

import click

from end2you_visual.recipes import find_recipe
from end2you_visual.training.config import CHOICES, RANGES, TrainConfig

INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)

_DEFAULTS = TrainConfig().to_dict()

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _opt(*decls: str, field_name: str | None = None, help: str = "",
         **kwargs: Any) -> Decorator:
    """A click option whose default is None (= not given: the recipe or
    TrainConfig decides); the help shows TrainConfig's default. A setting
    with a range (``RANGES``) or a list of words (``CHOICES``) gets them as
    its type."""
    name = field_name or decls[0].split("/")[0].lstrip("-").replace("-", "_")
    default = _DEFAULTS.get(name)
    shown = ("auto" if default is None and name == "augment" else
             ",".join(map(str, default)) if isinstance(default, list) else default)
    text = f"{help} [default: {shown}]" if shown not in (None, "") else help
    if name in RANGES:
        kwargs["type"] = RANGES[name].click_type()
    elif name in CHOICES:
        kwargs["type"] = click.Choice(list(CHOICES[name]))
    return click.option(*decls, default=None, help=text, **kwargs)


def _csv(kind: Callable[[str], Any] = str
         ) -> Callable[[click.Context, click.Parameter, str | None], list[Any] | None]:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None
                ) -> list[Any] | None:
        if value is None:
            return None
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError as err:
            raise click.BadParameter(f"{value!r}: {err}") from err
    return convert


OPTIONS = [
    _opt("--valid", multiple=True, type=click.Path(exists=True),
         help="Validation HDF5 file or folder (repeatable); else split the data."),
    _opt("--out", "out_dir", field_name="out_dir", help="Output folder (checkpoints, logs)."),
    _opt("--labels", "label_names", field_name="label_names", callback=_csv(),
         help="Comma-separated labels to train on (default: all the data's)."),
    _opt("--split-by", help="How to hold out validation data."),
    _opt("--valid-fraction", help="Share of subjects/sequences held out."),
    _opt("--window", help="Frames per training window."),
    _opt("--stride", help="Step between training windows (default: window)."),
    _opt("--skip-no-face/--keep-no-face", help="Leave frames without a face out of loss/metrics."),
    _opt("--init", help="Zoo model name or checkpoint to fine-tune (head replaced)."),
    _opt("--keep-head/--new-head", help="Keep the init model's head when it fits the data."),
    _opt("--arch", help="CNN of a new model (resnet50, resnet18, resnet18_half, i3d_resnet18...)."),
    _opt("--temporal", help="Recurrent layers."),
    _opt("--hidden-size", help="Recurrent hidden size."),
    _opt("--num-layers", help="Recurrent layers."),
    _opt("--dropout", help="Dropout on features and between layers."),
    _opt("--grey/--colour", help="A new model sees its input as grey (for grey images)."),
    _opt("--stem",
         help="CNN stem of a new model (small: 3x3/2 conv, no max-pool, for 48-64 px crops)."),
    _opt("--modality",
         help="Inputs: face crops, audio (needs generate --audio) or both, fused per frame."),
    _opt("--projection",
         help="Audiovisual: project each modality to this size before fusing (0: none)."),
    _opt("--freeze-visual/--train-visual",
         help="Audiovisual: keep the visual CNN (e.g. from --init) fixed."),
    _opt("--head", help="Output head (auto: from the data's label kind)."),
    _opt("--loss", help="Loss."),
    _opt("--label-weighting", help="Frame weights for bce/ce (inverse: 1 / label frame count)."),
    _opt("--class-weights", callback=_csv(float), help="Comma-separated per-label weights."),
    _opt("--teacher", help="Zoo model name or checkpoint whose outputs the student learns too "
                           "(same modality, head, labels; docs/distillation.md)."),
    _opt("--distill-weight",
         help="Distillation: loss = (1 - this) x label loss + this x distillation loss."),
    _opt("--temperature",
         help="Distillation: divides student and teacher logits (the loss x T^2)."),
    _opt("--feature-weight",
         help="Distillation: weight of matching the teacher's per-frame embeddings through a "
              "learned projection (0: off)."),
    _opt("--unlabelled-share",
         help="Distillation: share of each epoch's windows drawn from unlabelled files "
              "(default: each unlabelled window once)."),
    _opt("--resample/--no-resample", help="Repeat windows with rare labels and no frequent ones."),
    _opt("--rare-threshold",
         help="Rare below this many frames (a fraction of the frames when < 1)."),
    _opt("--resample-repeats", help="Extra copies of each qualifying window."),
    _opt("--resample-ignore", callback=_csv(),
         help="Comma-separated labels never counted as frequent (e.g. neutral)."),
    _opt("--augment/--no-augment", help="Resize + random crop (+ flip) + brightness/saturation."),
    _opt("--resize", help="Side before the random crop (default: size*170/150)."),
    _opt("--brightness", help="Brightness factor range 1 +- this."),
    _opt("--saturation", help="Saturation factor range 1 +- this."),
    _opt("--hflip", help="Probability of mirroring a window left to right."),
    _opt("--lr", help="Adam learning rate."),
    _opt("--weight-decay", help="Adam weight decay."),
    _opt("--batch-size", help="Windows per batch (per process)."),
    _opt("--valid-batch-size", help="Windows per validation batch (default: batch size)."),
    _opt("--epochs", help="Most epochs."),
    _opt("--patience", help="Stop after this many epochs without improvement."),
    _opt("--metric", help="Validation metric that picks the best model: ccc, pearson, rmse, "
                          "mae, accuracy, uar, f1, auc, loss (auto: by head)."),
    _opt("--grad-clip", help="Clip the gradient norm to this (0: off)."),
    _opt("--scheduler", help="Learning-rate schedule."),
    _opt("--max-steps-per-epoch", help="Cut epochs short (quick runs)."),
    _opt("--seed", help="Seed of the split, the model and the shuffling."),
    _opt("--device", help="auto, cpu, cuda, cuda:1..."),
    _opt("--precision", help="auto: bf16 autocast on CUDA, fp32 on CPU."),
    _opt("--channels-last/--no-channels-last", help="channels_last memory for the CNN."),
    _opt("--compile/--no-compile", help="torch.compile the model."),
    _opt("--num-workers", help="DataLoader worker processes."),
    _opt("--resume/--no-resume", help="Continue the run in --out from its last.pt."),
    _opt("--overwrite/--no-overwrite",
         help="Replace the run in --out (without --resume or this, a run there is refused)."),
    _opt("--progress/--no-progress", help="Progress bars."),
    _opt("--tensorboard/--no-tensorboard", help="TensorBoard logs (when installed)."),
]


def _with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(OPTIONS):
        func = option(func)
    return func


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is when they are written (click's
    test runner swaps it per call; a stream kept from an earlier call is closed)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("end2you_visual.training")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@click.command()
@click.argument("data", nargs=-1, type=click.Path(exists=True))
@click.option("--config", "recipe", metavar="NAME_OR_PATH",
              help="TOML recipe: a file, or a shipped recipe's name (e2y-visual zoo "
                   "recipes: pretrain, finetune...); options given here override it.")
@_with_options
def train(data: tuple[str, ...], recipe: str | None, **options: Any) -> None:
    """Train on HDF5 DATA (files or folders): categorical pretraining or CCC
    fine-tuning, decided by the data's labels (see docs/training.md).

    \b
    e2y-visual train data/ --config pretrain --out runs/pre
    e2y-visual train recola/ --config finetune --init runs/pre/best.pt --out runs/ft
    """
    from end2you_visual.training.trainer import NonFiniteLossError, train as run_train

    path = find_recipe(recipe) if recipe else None
    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
             if v is not None and v != ()}
    config = TrainConfig.from_toml(path, **given, train=list(data) if data else None)
    _setup_logging()
    try:
        result = run_train(config)
    except NonFiniteLossError as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        command = resume_command(click.get_current_context(), data, recipe, given,
                                 config.out_dir)
        last = os.path.join(config.out_dir, "last.pt")
        saved = (f"{last} keeps the last finished epoch" if os.path.isfile(last)
                 else "no epoch had finished")
        click.echo(f"Interrupted ({saved}); to continue: {command}", err=True)
        sys.exit(INTERRUPTED)
    if int(os.environ.get("RANK", 0)) == 0:
        click.echo(f"best validation {result.metric} {result.best_score:.4f} at epoch "
                   f"{result.best_epoch} of {result.epochs_run} ({result.stopped}) -> "
                   f"{result.best_path}")


def resume_command(ctx: click.Context, data: Sequence[str], recipe: str | None,
                   given: Mapping[str, Any], out_dir: str) -> str:
    """The command line that continues this run: its data, recipe and options,
    then ``--out OUT_DIR --resume``."""
    words = ["e2y-visual", "train", *data]
    if recipe:
        words += ["--config", recipe]
    for param in ctx.command.params:
        value = given.get(param.name)
        if value is None or param.name in ("out_dir", "resume", "overwrite"):
            continue
        if param.secondary_opts and isinstance(value, bool):
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                words += [param.opts[0], str(item)]
        elif isinstance(value, list):
            words += [param.opts[0], ",".join(map(str, value))]
        else:
            words += [param.opts[0], str(value)]
    return shlex.join([*words, "--out", str(out_dir), "--resume"])
