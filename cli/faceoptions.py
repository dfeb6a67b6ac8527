"""Click options made from :class:`end2you_visual.faces.FaceSettings` (as
`train` makes its options from ``TrainConfig``): one definition of each face
setting, its default, range and help, for `generate` and `predict`."""
import dataclasses

import click

from end2you_visual.faces import FaceSettings


def _option(f):
    meta = f.metadata
    low, high, integer, low_open, high_open = meta["range"]
    kwargs = {"default": f.default, "help": meta["help"], "show_default": f.default is not None}
    if meta["choices"] is not None:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif f.type in (int, float):
        kind = click.IntRange if integer else click.FloatRange
        kwargs["type"] = kind(min=low, max=high, min_open=low_open, max_open=high_open)
    return click.option(meta["option"], f.name, **kwargs)


def face_options(exclude=()):
    """A decorator adding one option per FaceSettings field (but ``exclude``)."""
    chosen = [f for f in dataclasses.fields(FaceSettings) if f.name not in exclude]

    def decorate(command):
        for f in reversed(chosen):
            command = _option(f)(command)
        return command
    return decorate

