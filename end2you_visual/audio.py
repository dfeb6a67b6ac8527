"""Audio tracks: decoding, frame alignment, and their place in the HDF5 files.

Decoding: ffmpeg (the binary moviepy uses) turns a file's first audio track
into mono float32 samples at ``rate`` Hz (full scale 1; resampling may
overshoot it slightly), streamed in chunks (the
whole track is never held by ffmpeg's pipe). Sample ``n`` is the sound at time
``n / rate`` seconds from the start of the file, the origin of the video
frames' timestamps (:mod:`end2you_visual.video`): a track that starts late
(an ``.mov`` whose audio begins at 2.43 s) is preceded by silence.

Alignment: output frame ``i``, shown at ``t_i`` seconds in a sequence of
frame rate ``fps``, owns the samples whose times fall in
``[t_i, t_i + 1 / fps)``::

    start_i = ceil(t_i * rate)      stop_i = ceil((t_i + 1 / fps) * rate)

so consecutive frames share no sample and miss none. Windows have
``samples_per_frame(fps, rate) = ceil(rate / fps)`` samples (a frame owns
that many or one fewer); a window is zero-padded past its range and past
the track's end.

Storage (:class:`AudioStore`, used by :class:`~end2you_visual.hdf5.SequenceWriter`)::

    /audio/waveform  float32 (M,)      every sequence's samples, concatenated
    /audio/offsets   int64   (Q + 1,)  sequence q: waveform[offsets[q]:offsets[q+1]]
    /audio/present   bool    (Q,)      False: the source has no audio track
    /audio/ranges    int64   (N, 2)    per frame row: [start, stop) within its
                                       sequence's samples
    attributes of /audio: rate (Hz), dtype ("float32"), channels (1)
"""
from __future__ import annotations

import math
import os
import re
import subprocess
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .ranges import check_number

__all__ = ["DEFAULT_RATE", "AUDIO_MODES", "has_audio", "iter_audio", "read_audio",
           "frame_ranges", "samples_per_frame", "frame_windows", "AudioStore",
           "read_audio_windows", "end2you_audio_windows", "audio_found", "check_rate",
           "audio_settings", "audio_track_found", "store_audio_track", "AudioSink"]

DEFAULT_RATE = 16000
AUDIO_MODES = ("required", "optional")
MIN_RATE, MAX_RATE = 1000, 192000
CHUNK_SAMPLES = 1 << 16
_TIME_DIGITS = 6  # round t * rate to micro-samples: 0.1 * 16000 is 1600, not 1600.0000000002


def check_rate(rate: float, option: str = "--audio-rate") -> int:
    """``rate`` as an int in [MIN_RATE, MAX_RATE], else InputError naming ``option``."""
    return int(check_number(option, rate, MIN_RATE, MAX_RATE, integer=True))


def _ffmpeg() -> str:
    from moviepy.config import FFMPEG_BINARY  # slow to import: only audio needs it here

    return FFMPEG_BINARY


def has_audio(path: str | os.PathLike[str]) -> bool:
    """True when ffmpeg finds an audio stream in ``path``."""
    probe = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, check=False)
    text = probe.stderr.decode("utf-8", "replace")
    if "Stream #" not in text:
        raise InputError(path, "not a readable media file: " +
                         (text.strip().splitlines() or ["ffmpeg found no streams"])[-1])
    return re.search(r"Stream #\S+.*: Audio:", text) is not None


def iter_audio(path: str | os.PathLike[str], rate: int = DEFAULT_RATE,
               chunk: int = CHUNK_SAMPLES) -> Iterator[npt.NDArray[np.float32]]:
    """Yield the audio track of ``path`` as mono float32 chunks at ``rate`` Hz.

    Raises:
        InputError: naming ``path`` when it has no audio track or ffmpeg fails.
    """
    rate = check_rate(rate)
    if not has_audio(path):
        raise InputError(path, "has no audio track (generate --audio optional records "
                               "its absence instead of failing)")
    command = [_ffmpeg(), "-nostdin", "-loglevel", "error", "-i", str(path),
               "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(rate),
               # start at the file's time 0 (silence before a late track), as frames do
               "-af", "aresample=async=1:first_pts=0",
               "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None  # both PIPE
    try:
        leftover = b""
        while True:
            data = proc.stdout.read(4 * chunk)
            if not data:
                break
            data = leftover + data
            whole = len(data) - len(data) % 4
            leftover = data[whole:]
            if whole:
                yield np.frombuffer(data[:whole], np.float32).copy()
        error = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0:
            raise InputError(path, f"ffmpeg could not decode its audio track: {error}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def read_audio(path: str | os.PathLike[str], rate: int = DEFAULT_RATE
               ) -> npt.NDArray[np.float32]:
    """The whole audio track of ``path``: mono float32 (M,) at ``rate`` Hz."""
    parts = list(iter_audio(path, rate))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _ceil_samples(seconds: npt.ArrayLike, rate: float) -> npt.NDArray[np.int64]:
    return np.ceil(np.round(np.asarray(seconds, np.float64) * rate, _TIME_DIGITS)).astype(np.int64)


def frame_ranges(timestamps: npt.ArrayLike, fps: float, rate: float) -> npt.NDArray[np.int64]:
    """(T, 2) int64 ``[start, stop)`` sample indices of frames shown at ``timestamps``.

    Frame ``i`` owns the samples of ``[t_i, t_i + 1 / fps)``; see the module doc.
    """
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    times = np.asarray(timestamps, np.float64).reshape(-1)
    return np.stack([_ceil_samples(times, rate), _ceil_samples(times + 1.0 / fps, rate)], 1)


def samples_per_frame(fps: float, rate: float) -> int:
    """Window length: ``ceil(rate / fps)``, the most samples a frame owns."""
    return int(math.ceil(round(rate / fps, _TIME_DIGITS)))


def frame_windows(waveform: np.ndarray, ranges: npt.ArrayLike, length: int
                  ) -> npt.NDArray[np.float32]:
    """(T, length) float32 windows: ``waveform[start:stop]`` of each range, zero-padded."""
    ranges = np.asarray(ranges, np.int64).reshape(-1, 2)
    out = np.zeros((len(ranges), int(length)), np.float32)
    for row, (start, stop) in enumerate(ranges):
        piece = waveform[max(start, 0):max(min(stop, start + length, len(waveform)), 0)]
        out[row, :len(piece)] = piece
    return out


class AudioStore:
    """The ``/audio`` group of a file being written (see the module doc).

    :class:`~end2you_visual.hdf5.SequenceWriter` owns one when made with
    ``audio_rate``; samples are appended while a sequence is open and the
    per-frame ranges are computed at :meth:`finish` from the frames'
    timestamps and their sequence's frame rate.
    """

    def __init__(self, h5: Any, rate: int) -> None:  # h5: an open h5py.File
        self.rate = check_rate(rate)
        group = h5.create_group("audio")
        group.attrs.update({"rate": self.rate, "dtype": "float32", "channels": 1})
        self.group = group
        self.waveform = group.create_dataset("waveform", (0,), np.float32, maxshape=(None,),
                                             chunks=(CHUNK_SAMPLES,))
        self.offsets = [0]
        self.present: list[bool] = []
        self._open_present: bool | None = None

    def begin_sequence(self) -> None:
        self._open_present = False

    def append(self, samples: npt.ArrayLike) -> None:
        """Append mono float32 samples to the open sequence."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        start = self.waveform.shape[0]
        self.waveform.resize(start + len(samples), axis=0)
        self.waveform[start:] = samples
        self._open_present = True

    def end_sequence(self) -> None:
        self.present.append(bool(self._open_present))
        self.offsets.append(int(self.waveform.shape[0]))
        self._open_present = None

    def finish(self, timestamps: np.ndarray, frame_offsets: Sequence[int],
               fps: Sequence[float]) -> list[Any]:
        """Write offsets, presence and each frame row's sample range."""
        ranges = np.zeros((len(timestamps), 2), np.int64)
        for q, rate in enumerate(fps):
            a, b = frame_offsets[q], frame_offsets[q + 1]
            if b > a and rate > 0:
                ranges[a:b] = frame_ranges(timestamps[a:b], rate, self.rate)
        group = self.group
        handles = [group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64)),
                   group.create_dataset("present", data=np.asarray(self.present, bool)),
                   group.create_dataset("ranges", data=ranges)]
        return handles


def audio_found(h5: Any) -> bool | None:  # h5: an open h5py.File
    """For a committed file with one sequence: whether its source had audio
    (None: no ``/audio`` group, or several sequences)."""
    if "audio" not in h5 or len(h5["audio/present"]) != 1:
        return None
    return bool(h5["audio/present"][0])


def read_audio_windows(h5: Any, sequence_index: int, row_start: int, row_stop: int, fps: float,
                       length: int | None = None) -> tuple[npt.NDArray[np.float32], bool]:
    """Windows (T, length) and presence of rows of one sequence of an end2you-visual file.

    ``row_start``/``row_stop`` are absolute frame rows of the file; ``length``
    defaults to ``samples_per_frame(fps, rate)``. Returns ``(windows, present)``.
    """
    group = h5["audio"]
    rate = int(group.attrs["rate"])
    length = samples_per_frame(fps, rate) if length is None else int(length)
    present = bool(group["present"][sequence_index])
    ranges = group["ranges"][row_start:row_stop]
    if not present or not len(ranges):
        return np.zeros((len(ranges), length), np.float32), present
    a, b = (int(v) for v in group["offsets"][sequence_index:sequence_index + 2])
    lo = int(ranges[:, 0].min())
    hi = min(int(ranges[:, 0].max()) + length, b - a)
    piece = group["waveform"][a + lo:a + max(hi, lo)] if hi > lo else np.zeros(0, np.float32)
    return frame_windows(piece, ranges - lo, length), present


def end2you_audio_windows(audio: Any, per_step: int, start: int, stop: int
                          ) -> npt.NDArray[np.float32]:
    """Per-frame windows of an End2You ``audio`` dataset (steps, samples).

    End2You stores one row of samples per label step beside its ``per_step``
    video frames; frame ``k`` of step ``s`` owns the ``k``-th of ``per_step``
    equal parts of row ``s``. Returns (stop - start, samples // per_step)
    float32 for the expanded frame rows ``start:stop``.
    """
    length = audio.shape[1] // per_step
    if not length:
        raise ValueError(f"End2You audio rows of {audio.shape[1]} samples cannot be split "
                         f"over {per_step} frames")
    rows = np.arange(start, stop)
    steps = np.unique(rows // per_step)
    block = np.asarray(audio[int(steps[0]):int(steps[-1]) + 1] if len(steps) else
                       audio[0:0], np.float32)
    parts = block[:, :length * per_step].reshape(-1, length)  # (steps*per_step, length)
    first = int(steps[0]) * per_step if len(steps) else 0
    return parts[rows - first]


# ------------------------------------------------------------- for generate
def audio_settings(mode: str | None, rate: float) -> int:
    """Check ``generate``'s ``--audio`` mode and ``--audio-rate``; returns the rate."""
    if mode not in (None,) + AUDIO_MODES:
        raise InputError("--audio", f"must be one of {list(AUDIO_MODES)}, got {mode!r}")
    return check_rate(rate)


def audio_track_found(path: str | os.PathLike[str], mode: str | None) -> bool | None:
    """None when ``mode`` is None; else whether ``path`` has an audio track.

    Raises:
        InputError: naming ``path`` when ``mode == "required"`` and it has none.
    """
    if mode is None:
        return None
    found = has_audio(path)
    if not found and mode == "required":
        raise InputError(path, "has no audio track, and --audio required asks for one "
                               "(use --audio optional to record its absence instead)")
    return found


class AudioSink(Protocol):
    """Where :func:`store_audio_track` streams a track: a
    :class:`~end2you_visual.hdf5.SequenceWriter` with an open sequence."""

    def append_audio(self, samples: npt.ArrayLike) -> None:
        """Append mono float32 samples to the open sequence's track."""


def store_audio_track(writer: AudioSink, path: str | os.PathLike[str], rate: int) -> None:
    """Stream the audio track of ``path`` into ``writer``'s open sequence."""
    for chunk in iter_audio(path, rate):
        writer.append_audio(chunk)
