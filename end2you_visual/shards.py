"""Which share of the inputs this process generates, when `generate` runs on
several machines (or processes) at once.

Each process takes every ``num_shards``-th input from its ``shard_index``
on (:func:`~end2you_visual.inputs.select_shard`). :func:`default_shard`
decides the pair: the flags ``--num-shards`` / ``--shard-index`` when given,
else the environment of the launcher:

* torchrun: ``RANK`` of ``WORLD_SIZE``
  (:func:`~end2you_visual.inputs.shard_from_env`);
* a SLURM job array (``sbatch --array=0-9``): ``SLURM_ARRAY_TASK_ID``,
  numbered from ``SLURM_ARRAY_TASK_MIN`` in steps of
  ``SLURM_ARRAY_TASK_STEP``, of ``SLURM_ARRAY_TASK_COUNT`` tasks (or as
  many as ``SLURM_ARRAY_TASK_MIN``..``SLURM_ARRAY_TASK_MAX`` holds);
  :func:`slurm_array_shard`;
* both (torchrun in each task of an array): task ``t`` of ``T``, rank ``r``
  of ``W``: shard ``t * W + r`` of ``T * W``;
* neither: one shard, ``(1, 0)``.

A value that is not a whole number, or a share outside the count, is an
:class:`~end2you_visual.errors.InputError` naming the variable::

    from end2you_visual.shards import default_shard
    num_shards, shard_index = default_shard()   # e.g. (10, 3) in task 3 of --array=0-9
"""
from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional, Tuple

from .errors import InputError
from .inputs import shard_from_env
from .ranges import COUNT, INDEX, check_number

__all__ = ["Shard", "default_shard", "environment_shard", "slurm_array_shard",
           "SLURM_ARRAY_VARIABLES"]

#: The variables of a SLURM array task that :func:`slurm_array_shard` reads.
SLURM_ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                         "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                         "SLURM_ARRAY_TASK_STEP")


class Shard(NamedTuple):
    """This process's share: every ``num_shards``-th input from the
    ``shard_index``-th on (the arguments of
    :func:`~end2you_visual.generate.generate`, in its order)."""

    num_shards: int
    shard_index: int


def _whole(environ: Mapping[str, str], name: str) -> Optional[int]:
    """The variable ``name`` as an int (None when unset or empty)."""
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(name, f"must be a whole number, got {text!r}") from None


def slurm_array_shard(environ: Optional[Mapping[str, str]] = None) -> Optional[Shard]:
    """The shard of a SLURM job array's task, or None outside an array.

    The tasks must be evenly spaced (``--array=0-9``, ``--array=1-20``,
    ``--array=0-30:10``): task ``SLURM_ARRAY_TASK_ID`` is shard
    ``(ID - MIN) / STEP`` of ``SLURM_ARRAY_TASK_COUNT`` (MIN 0 and STEP 1
    when unset; the count ``(MAX - MIN) / STEP + 1`` when
    ``SLURM_ARRAY_TASK_COUNT`` is unset).

    Raises:
        InputError: naming the variable that is not a whole number, or the
            variables when they do not describe evenly spaced tasks holding
            this one (``--array=1,5,6``: pass ``--num-shards`` and
            ``--shard-index`` instead).
    """
    env = os.environ if environ is None else environ
    values = {name: _whole(env, name) for name in SLURM_ARRAY_VARIABLES}
    task, count, first, last, step = values.values()
    if task is None:
        return None
    shown = ", ".join(f"{name}={env[name]}" for name in SLURM_ARRAY_VARIABLES
                      if values[name] is not None)
    first = 0 if first is None else first
    step = 1 if step is None else step
    if step < 1:
        raise InputError("SLURM_ARRAY_TASK_STEP", f"must be >= 1, got {step}")
    if count is None:
        if last is None:
            raise InputError("SLURM_ARRAY_TASK_ID", "is set, but neither "
                             "SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX says how many "
                             "tasks share the inputs; pass --num-shards and --shard-index")
        count = (last - first) // step + 1
    uneven = (count < 1 or (last is not None and first + (count - 1) * step != last)
              or (task - first) % step)
    index = (task - first) // step
    if uneven or not 0 <= index < count:
        raise InputError(f"SLURM job array ({shown})",
                         "does not number its tasks evenly from SLURM_ARRAY_TASK_MIN "
                         "(as --array=0-9 or --array=1-20 do), so this task's share of the "
                         "inputs is unknown; submit such an array, or pass --num-shards "
                         "and --shard-index")
    return Shard(count, index)


def environment_shard(environ: Optional[Mapping[str, str]] = None
                      ) -> Tuple[Shard, Optional[str]]:
    """``(shard, source)``: the shard the launcher's variables give
    (torchrun's, a SLURM array's, or both combined: see the module), and
    the variables it came from as text (None, and ``(1, 0)``, when none is
    set).

    Raises:
        InputError: naming a variable that is not a whole number, or
            variables that contradict each other (see
            :func:`slurm_array_shard`, :func:`~end2you_visual.inputs.shard_from_env`).
    """
    env = os.environ if environ is None else environ
    world, rank = shard_from_env(env)
    array = slurm_array_shard(env)
    sources = []
    if array is not None:
        sources.append(f"SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']} "
                       f"(task {array.shard_index} of {array.num_shards})")
    if "WORLD_SIZE" in env:
        sources.append(f"RANK={env['RANK']} of WORLD_SIZE={env['WORLD_SIZE']}")
    if array is None:
        return Shard(world, rank), (" and ".join(sources) or None)
    return (Shard(array.num_shards * world, array.shard_index * world + rank),
            " and ".join(sources))


def default_shard(num_shards: Optional[int] = None, shard_index: Optional[int] = None,
                  environ: Optional[Mapping[str, str]] = None) -> Shard:
    """This process's :class:`Shard`: ``num_shards`` and ``shard_index`` as
    given (the flags ``--num-shards``, ``--shard-index``), each one not
    given taken from the environment (:func:`environment_shard`).

    Both given: the environment is not read. One given: it must fit the
    other, taken from the environment.

    Raises:
        InputError: a count below 1, an index outside ``[0, num_shards)``
            (naming the flag, or the variables it came from), or a bad
            environment (naming the variable).
    """
    count = None if num_shards is None else int(COUNT.check("--num-shards", num_shards))
    index = None if shard_index is None else int(INDEX.check("--shard-index", shard_index))
    if count is not None and index is not None:
        return Shard(count, int(check_number("--shard-index", index, 0, count, integer=True,
                                             max_open=True)))
    (env_count, env_index), source = environment_shard(environ)
    if count is not None:  # the index from the environment
        if env_index >= count:
            raise InputError("--num-shards", f"{count} has no shard {env_index}, this "
                                             f"process's share by {source}; pass "
                                             "--shard-index too, or leave --num-shards out")
        return Shard(count, env_index)
    if index is None:
        return Shard(env_count, env_index)
    if index >= env_count:
        where = f"by {source}" if source else "without --num-shards"
        raise InputError("--shard-index", f"{index} is not below the {env_count} "
                                          f"shard(s) {where}; pass --num-shards too")
    return Shard(env_count, index)
