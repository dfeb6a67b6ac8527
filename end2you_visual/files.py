"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees a half-written file, and an error leaves the previous
version (or nothing) in place. Files get the permissions an ordinary
``open(path, "w")`` would give (``0o666`` less the umask), not the ``0o600``
of a bare temporary file.
"""
import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, List, Optional, Tuple, Union

from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["DISK_FULL", "atomic_file", "atomic_path", "atomic_write_text", "temporary_beside",
           "default_file_mode",
           "TEMPORARY_EXTRA", "name_limit", "check_name_length", "check_writable", "files_in",
           "expand_paths"]

#: Bytes :func:`temporary_beside` adds to a file's name: ``.<name>.XXXXXXXX.tmp``.
TEMPORARY_EXTRA = len(".") + len(".") + 8 + len(".tmp")


# The errors of a write that did not fit: a full disk, a quota, a size limit.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def default_file_mode() -> int:
    """The permissions of an ordinary new file: ``0o666`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_beside(path: PathLike) -> Tuple[int, Path]:
    """``(fd, tmp)``: a new hidden temporary file in ``path``'s folder
    (created), ``.<name>.XXXX.tmp``, open as ``fd``, with the permissions of
    an ordinary new file (:func:`default_file_mode`), not the ``0o600`` of
    ``tempfile.mkstemp``: renamed onto ``path``, it follows the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, default_file_mode())
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """``with atomic_path(path) as tmp:`` writes ``path`` atomically through
    the file named ``tmp``, for writers that open a file by name (h5py).

    ``tmp`` is a new, empty hidden file beside ``path``
    (:func:`temporary_beside`; the folder is created); when the block ends
    it replaces ``path``. The block must close what it opened on ``tmp``.
    On an exception ``tmp`` is removed and ``path`` is left as it was; an
    OSError of the writing (a full disk) is raised naming ``path``
    (``err.filename``), so that the command line reports it in one line.
    """
    path = Path(path)
    try:
        fd, tmp = temporary_beside(path)
        os.close(fd)
    except OSError as err:
        raise _naming(err, path) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise _naming(err, path) from None
        raise


@contextmanager
def atomic_file(path: PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_file(path, "w") as handle:`` writes ``path`` atomically.

    ``handle`` is the temporary file beside ``path`` opened with ``mode``
    and ``open_kwargs`` (see :func:`atomic_path`: the folder is created; on
    an exception ``path`` is left as it was, and an OSError of the writing
    is raised naming ``path``).
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle


def _naming(err: OSError, path: PathLike) -> OSError:
    """``err`` (an OSError of a write, a full disk...) naming ``path``, the
    file the user asked for, not the temporary one or none at all."""
    return type(err)(err.errno, err.strerror or str(err), str(path))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def name_limit(folder: PathLike) -> int:
    """The longest file name, in bytes, the file system of ``folder`` (or of
    its nearest existing parent) takes: ``PC_NAME_MAX``, 255 where it cannot
    say."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_name_length(path: PathLike, source: Optional[PathLike] = None,
                      stem: Optional[str] = None) -> None:
    """Refuse an output ``path`` whose name, with the additions of its
    temporary file (:data:`TEMPORARY_EXTRA`), is longer than the file system
    takes (:func:`name_limit`): checked before any work, so that a long
    input name fails at once, not when the output is written.

    Args:
        path: the output file.
        source: the input the name comes from, named by the error (default ``path``).
        stem: the part of the name that comes from ``source``; the error
            then says how long it may be.

    Raises:
        InputError: naming ``source``, the byte counts and the limit.
    """
    path = Path(path)
    limit = name_limit(path.parent)
    needed = len(os.fsencode(path.name)) + TEMPORARY_EXTRA
    if needed <= limit:
        return
    ending, advice = path.suffix, ""
    if stem is not None and path.name.startswith(stem):
        ending = path.name[len(stem):]
        allowed = max(limit - needed + len(os.fsencode(stem)), 0)
        advice = f"; rename it to at most {allowed} bytes before the extension"
    raise InputError(source if source is not None else path,
                     f"name too long for its output file (<name>{ending}): with its temporary "
                     f"file's additions it needs {needed} bytes, and {path.parent} takes names "
                     f"of at most {limit} bytes{advice}")


def check_writable(path: PathLike, option: Optional[str] = "--out",
                   folder: bool = True) -> None:
    """Raise :class:`~end2you_visual.errors.InputError` (naming ``option`` and
    ``path``) unless ``path`` can be written: a folder (``folder``) or a file
    that exists as one or can be created. Nothing is created; called before
    any work so that a bad ``--out`` fails at once, not after the run."""
    from .errors import InputError

    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.exists():
        if folder and not path.is_dir():
            raise InputError(name, "is a file, not a folder")
        if not folder and path.is_dir():
            raise InputError(name, "is a folder, not a file")
        target = path if folder else path.parent
    else:
        target = path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise InputError(name, f"cannot be created: {target} is a file, not a folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(name, f"cannot be written: {target} is not writable")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def files_in(folder: PathLike, suffixes: Iterable[str], recursive: bool = True) -> List[Path]:
    """The files under ``folder`` (``recursive``: in sub-folders too) whose
    suffix is one of ``suffixes`` (any case), sorted; hidden files and
    folders (``.x``, macOS ``._x.mp4``) are skipped."""
    folder = Path(folder)
    suffixes = tuple(s.lower() for s in suffixes)
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in found if p.suffix.lower() in suffixes and p.is_file()
                  and not _hidden(p, folder))


def expand_paths(paths: Union[PathLike, Iterable[PathLike]], suffixes: Iterable[str], what: str,
                 recursive: bool = True) -> List[Path]:
    """Files and folders -> files: a file as given, a folder's
    :func:`files_in` (``suffixes``). The one expansion of "files or folders".

    Raises:
        InputError: a path that does not exist, a folder holding no such
            file (``what``, e.g. ``"video files"``), or no path at all.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = files_in(p, suffixes, recursive)
            if not found:
                raise InputError(p, f"folder holds no {what}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(p, "no such file or folder")
    if not out:
        raise InputError(None, f"no {what} given")
    return out
