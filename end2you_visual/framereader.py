"""Fast reads of frames from end2you-visual HDF5 files, into arrays the
caller owns (the data layer's way to read windows fast, used by
:func:`end2you_visual.inference.predict_sequences`)::

    reader = FrameReader(SequenceFile("data/p01.h5"))
    reader.read_into(info, 0, 150, out)   # out: uint8 (150, S, S, 3)
    reader.close()

Uncompressed files whose chunks hold whole frames are read with
``os.preadv`` straight from the chunks' byte offsets into ``out`` (no GIL
held, no extra copy, safe from several threads); other end2you-visual files
through h5py's ``read_direct``; End2You files through
:meth:`SequenceFile.read`.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import numpy.typing as npt

from .errors import InputError
from .hdf5 import FORMAT_NAME

__all__ = ["FrameReader"]

if TYPE_CHECKING:
    from .data import SequenceFile, SequenceInfo


class FrameReader:
    """Reads rows of one HDF5 file's frames into caller-provided arrays.

    Uncompressed end2you-visual files whose chunks hold whole frames are
    read with ``os.preadv`` from the chunks' byte offsets (thread-parallel:
    no GIL held during the read); other files through h5py.
    """

    def __init__(self, seqfile: SequenceFile) -> None:
        self.file = seqfile
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._h5: Any = None  # an open h5py.File
        self._chunk_offsets: npt.NDArray[np.int64] | None = None  # byte offset of chunk k, -1 if unallocated
        self._chunk_rows = 0
        self._frame_bytes = 0
        self.fast = seqfile.format == FORMAT_NAME and self._index_chunks()

    def _index_chunks(self) -> bool:
        with h5py.File(self.file.path, "r") as h5:
            dset = h5["frames"]
            s = self.file.frame_size
            filters = dset.id.get_create_plist().get_nfilters()
            if (dset.dtype != np.uint8 or dset.chunks is None or filters
                    or tuple(dset.chunks[1:]) != (s, s, 3)):
                return False
            rows = dset.chunks[0]
            n_chunks = -(-dset.shape[0] // rows)
            offsets = np.full(n_chunks, -1, np.int64)

            def record(info: Any) -> None:  # an h5py StoreInfo
                offsets[info.chunk_offset[0] // rows] = info.byte_offset

            try:
                dset.id.chunk_iter(record)
            except (AttributeError, RuntimeError):  # older HDF5: one call per chunk
                for i in range(dset.id.get_num_chunks()):
                    record(dset.id.get_chunk_info(i))
        self._chunk_offsets, self._chunk_rows = offsets, rows
        self._frame_bytes = s * s * 3
        return True

    def _open(self) -> None:
        with self._lock:
            if self.fast and self._fd is None:
                self._fd = os.open(self.file.path, os.O_RDONLY)
            if not self.fast and self._h5 is None and self.file.format == FORMAT_NAME:
                self._h5 = h5py.File(self.file.path, "r")

    def read_into(self, info: SequenceInfo, start: int, stop: int,
                  out: npt.NDArray[np.uint8]) -> None:
        """Frames ``start:stop`` of sequence ``info`` into ``out`` (uint8 (n, S, S, 3))."""
        self._open()
        a, b = info.start + start, info.start + stop
        if self.fast:
            self._pread(a, b, out)
        elif self._h5 is not None:
            self._h5["frames"].read_direct(out, np.s_[a:b], np.s_[0:b - a])
        else:  # End2You files: the reader's own conversion (cached once)
            with self._lock:
                frames = self.file.read(info, start, stop).frames
                assert frames is not None  # read with its frames
                out[:] = frames

    def _pread(self, a: int, b: int, out: npt.NDArray[np.uint8]) -> None:
        if not out.flags.c_contiguous:
            raise ValueError("read_into needs a C-contiguous array")
        # numpy declares its buffer protocol to type checkers on Python >= 3.12 only.
        view = memoryview(out.reshape(-1))  # type: ignore[arg-type, unused-ignore]
        rows, fb, offsets = self._chunk_rows, self._frame_bytes, self._chunk_offsets
        assert offsets is not None and self._fd is not None  # fast: indexed and opened
        row, pos = a, 0
        while row < b:
            k = row // rows
            n = min(b - row, (k + 1) * rows - row)
            if offsets[k] < 0:  # never written: let HDF5 supply its fill value
                first = pos // fb
                with h5py.File(self.file.path, "r") as h5:
                    h5["frames"].read_direct(out, np.s_[row:row + n], np.s_[first:first + n])
            else:
                start = offsets[k] + (row - k * rows) * fb
                # Neighbouring chunks stored back to back are read in one call.
                while (row + n < b and k + 1 < len(offsets)
                       and offsets[k + 1] == offsets[k] + rows * fb):
                    k += 1
                    n += min(b - row - n, rows)
                _pread_full(self._fd, view[pos:pos + n * fb], start, self.file.path)
            row, pos = row + n, pos + n * fb

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._h5 is not None:
                self._h5.close()
                self._h5 = None


def _pread_full(fd: int, view: memoryview, offset: int, path: str | os.PathLike[str]) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise InputError(path, f"file ends early (reading {len(view)} bytes at {offset})")
        got += n
