"""Click options made from :class:`end2you_visual.face_settings.FaceSettings` (as
`train` makes its options from ``TrainConfig``): one definition of each face
setting, its default, range and help, for `generate`, `predict` and `extract`."""
import dataclasses
from typing import Any, Callable, Collection, Dict

import click

from end2you_visual.face_settings import NUMERIC_SETTINGS, FaceSettings
from end2you_visual.framing import FRAMED_SETTINGS


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _option(f: "dataclasses.Field[Any]", framed: bool = False) -> Decorator:
    meta = f.metadata
    kwargs: Dict[str, Any] = {"default": f.default, "help": meta["help"],
                              "show_default": f.default is not None}
    if framed and f.name in FRAMED_SETTINGS:
        # Not given (None): the model's framing decides, else the usual default.
        kwargs.update(default=None,
                      show_default=f"the model's framing, as its training crops were cut; "
                                   f"else {f.default}")
    if meta["choices"] is not None:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif f.name in NUMERIC_SETTINGS:
        kwargs["type"] = meta["range"].click_type()
    return click.option(meta["option"], f.name, **kwargs)


def face_options(exclude: Collection[str] = (), framed: bool = False) -> Decorator:
    """A decorator adding one option per FaceSettings field (but ``exclude``).

    ``framed``: for commands that run a model (`predict`, `extract`), the
    options of :data:`~end2you_visual.framing.FRAMED_SETTINGS` (``--margin``)
    default to None, "not given": the model's framing then decides.
    """
    chosen = [f for f in dataclasses.fields(FaceSettings) if f.name not in exclude]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(chosen):
            command = _option(f, framed)(command)
        return command
    return decorate

