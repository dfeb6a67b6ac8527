"""Which sequences train and which validate.

The order tried by ``split_by="auto"``:

1. ``files``: explicit validation files were given; every sequence of the
   training files trains, every sequence of the validation files validates.
2. ``split``: some sequence has a ``split`` metadata column (the input CSV's)
   naming a validation partition (``valid``, ``validation``, ``val``,
   ``devel``, ``dev``): those validate, ``train``/``training`` rows train.
3. ``subject``: some sequence has a ``subject`` column: subjects (not
   sequences) are shuffled with the seed and ``valid_fraction`` of them
   (at least one) validate, so no person is in both sets. A sequence without
   a subject is its own group.
4. ``sequence``: sequences are shuffled with the seed and
   ``valid_fraction`` of them validate (image datasets such as FER2013).

Rows whose ``split`` is ``test`` (or ``testing``) never train nor validate.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import InputError
from ..inputs import TEST_NAMES, TRAIN_NAMES, VALID_NAMES

if TYPE_CHECKING:
    from ..data import SequenceFile, SequenceInfo

__all__ = ["Split", "split_sequences", "TRAIN_NAMES", "VALID_NAMES", "TEST_NAMES"]

# A sequence's key: (its file's path, its index in the file).
Key = tuple[str, int]
# What _by_groups holds out together: a subject, or one sequence (file name, sequence name).
Group = Union[str, tuple[str, str]]


@dataclass
class Split:
    """Sequence keys ``(path, index)`` for training and validation, and how."""

    train: set[Key]
    valid: set[Key]
    how: str

    def describe(self) -> str:
        return (f"split by {self.how}: {len(self.train)} training and "
                f"{len(self.valid)} validation sequences")


def _key(info: SequenceInfo) -> Key:
    return (info.path, info.index)


def _split_value(info: SequenceInfo) -> str:
    return str(info.metadata.get("split", "")).strip().lower()


def _sequences(files: Iterable[SequenceFile]) -> list[SequenceInfo]:
    return [info for f in files for info in f.sequences if info.length > 0]


def _by_files(train_seqs: Sequence[SequenceInfo], valid_files: Iterable[SequenceFile]
              ) -> tuple[set[Key], set[Key]]:
    valid_seqs = _sequences(valid_files)
    overlap = {s.path for s in valid_seqs} & {s.path for s in train_seqs}
    if overlap:
        raise InputError(sorted(overlap)[0], "is both a training and a validation file")
    return {_key(s) for s in train_seqs}, {_key(s) for s in valid_seqs}


def _by_column(seqs: Sequence[SequenceInfo]) -> tuple[set[Key], set[Key]]:
    train = {_key(s) for s in seqs if _split_value(s) in TRAIN_NAMES}
    valid = {_key(s) for s in seqs if _split_value(s) in VALID_NAMES}
    return train, valid


def _by_groups(seqs: Sequence[SequenceInfo], group_of: Callable[[SequenceInfo], Group],
               fraction: float, seed: int, what: str) -> tuple[set[Key], set[Key]]:
    groups = sorted({group_of(s) for s in seqs})
    if len(groups) < 2:
        raise InputError(None, f"no validation data: only {len(groups)} {what} to split; "
                               "give validation files (valid)")
    random.Random(seed).shuffle(groups)
    n_valid = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_out = set(groups[:n_valid])
    train = {_key(s) for s in seqs if group_of(s) not in held_out}
    valid = {_key(s) for s in seqs if group_of(s) in held_out}
    return train, valid


def _sequence_id(info: SequenceInfo) -> tuple[str, str]:
    # By file name and sequence name, not the path string, so that the same
    # data reached by another path (relative, absolute, copied) splits the same.
    return (Path(info.path).name, info.name)


def _subject(info: SequenceInfo) -> str:
    subject = str(info.metadata.get("subject", "")).strip()
    return subject if subject else "\0" + "#".join(_sequence_id(info))


def split_sequences(train_files: Iterable[SequenceFile],
                    valid_files: Sequence[SequenceFile] = (), split_by: str = "auto",
                    fraction: float = 0.2, seed: int = 0) -> Split:
    """Split the sequences of ``train_files`` (and ``valid_files``); see module doc.

    Args:
        train_files, valid_files: lists of :class:`~end2you_visual.data.SequenceFile`.
        split_by: ``auto``, ``files``, ``split``, ``subject`` or ``sequence``.
        fraction: share of subjects/sequences held out.
        seed: shuffles subjects/sequences.

    Returns:
        A :class:`Split`. Raises InputError when there is no validation (or
        no training) data.
    """
    seqs = [s for s in _sequences(train_files) if _split_value(s) not in TEST_NAMES]
    if split_by == "auto":
        if valid_files:
            split_by = "files"
        elif any(_split_value(s) in VALID_NAMES for s in seqs):
            split_by = "split"
        elif any(str(s.metadata.get("subject", "")).strip() for s in seqs):
            split_by = "subject"
        else:
            split_by = "sequence"
    if split_by == "files":
        if not valid_files:
            raise InputError(None, "no validation data: split by files but no validation files")
        train, valid = _by_files(seqs, valid_files)
    elif split_by == "split":
        train, valid = _by_column(seqs)
    elif split_by == "subject":
        train, valid = _by_groups(seqs, _subject, fraction, seed, "subject(s)")
    elif split_by == "sequence":
        train, valid = _by_groups(seqs, _sequence_id, fraction, seed, "sequence(s)")
    else:
        raise InputError(None, f"unknown split_by {split_by!r}")
    if not valid:
        raise InputError(None, f"no validation data (split by {split_by}): no sequence "
                               f"validates; name a validation partition in the 'split' "
                               f"column ({', '.join(VALID_NAMES)}) or give validation files")
    if not train:
        raise InputError(None, f"no training data (split by {split_by})")
    return Split(train, valid, split_by)
