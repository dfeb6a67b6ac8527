"""Reading videos and still images as uint8 RGB frames.

Videos are decoded by ffmpeg (the binary moviepy uses) at a constant frame
rate equal to the video's own rate, so that frame ``i`` is the picture shown
at time ``i / fps`` seconds from the start of the file. This holds for
variable-frame-rate files too (phone recordings, spliced clips): ffmpeg
repeats or drops pictures to keep the constant rate, exactly as a player
sampling the video every ``1 / fps`` seconds would see it.

Which rate is "the video's own": the stream's base rate (ffmpeg's ``tbr``,
i.e. ``r_frame_rate``), the rate at which its pictures are timed. The
*average* rate (ffmpeg's ``fps``, frames / duration) is unreliable for
constant-rate files (a 24 fps clip whose container duration includes a
longer audio track reads as 23.67) and lower than the picture rate for
variable-rate ones (26.4 for a clip spliced from a 30 fps and a 24 fps
part); sampling at it would drop pictures. Where the base rate is
implausible (above 210, or more than 1.5 times the average: irregular
timestamps, e.g. 120 for a spliced clip averaging 26.5) the average rate is
used instead, so that most pictures are not repeated.

The frame count from the container header (``VideoInfo.n_frames``) is an
estimate (duration x fps). :func:`iter_frame_batches` yields exactly the
frames that decode, which can differ by a frame or more for broken files;
callers that need the exact count up front use ``probe_video(path,
count=True)`` (decodes the whole file once).
"""
from __future__ import annotations

import math
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
import io
from typing import Any, Iterator, cast

import numpy as np
import numpy.typing as npt

from .errors import InputError

__all__ = ["VideoInfo", "VideoFrames", "probe_video", "iter_frame_batches", "read_image"]

# A "tbr" above this is a time base, not a frame rate (ffmpeg's own rule in
# av_guess_frame_rate).
_MAX_PLAUSIBLE_FPS = 210.0
_MAX_BASE_OVER_AVERAGE = 1.5


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video file.

    Attributes:
        path: the file, as given.
        fps: frames per second at which :func:`iter_frame_batches` samples it
            (the video's own base rate, see the module docstring).
        n_frames: number of frames; an estimate from the header
            (``int(duration * fps)``) unless probed with ``count=True``, then
            exactly what :func:`iter_frame_batches` yields.
        width, height: frame size in pixels as displayed (and decoded):
            after the file's rotation metadata (a phone's display matrix)
            is applied, so a portrait phone clip stored as landscape pixels
            is ``height > width``.
        duration: length in seconds from the container header.
        rotation: the display rotation of the file, in degrees
            counter-clockwise (0, 90, 180 or 270), applied when decoding.
    """

    path: str
    fps: float
    n_frames: int
    width: int
    height: int
    duration: float
    rotation: int = 0


def _probe_header(path: str) -> tuple[float, int, int, int, float, int]:
    """fps, frame count, displayed size, duration and rotation from the header."""
    if not os.path.isfile(path):
        raise InputError(path, "file not found")
    report = _ffmpeg_report(path)
    infos = _parse_infos(path, report)
    base = infos.get("video_fps") or 0.0  # the base rate, "tbr"
    # moviepy is imported here: it is slow to import and only videos need it.
    from moviepy import VideoFileClip

    try:
        # Opening also decodes the first frame: a file that cannot even do
        # that fails here rather than half-way through a generator.
        clip = VideoFileClip(path, audio=False)
    except (OSError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(path, f"cannot read as a video: {_reason(exc)}") from exc
    try:
        average = float(clip.fps or 0.0)
        duration = float(clip.duration or 0.0)
    finally:
        clip.close()
    # The coded size: moviepy's size is that too, unrotated (it does not read
    # the display matrix of current ffmpeg versions).
    width, height = (int(v) for v in infos.get("video_size") or (0, 0))
    rotation = _display_rotation(report)
    if rotation in (90, 270):  # ffmpeg turns the pictures upright as it decodes
        width, height = height, width
    fps = _choose_fps(float(base), average)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(path, "has no usable frame rate")
    if width <= 0 or height <= 0:
        raise InputError(path, "has no usable frame size")
    # moviepy's own estimate (FFMPEG_VideoReader.n_frames), at our rate.
    n_frames = int(duration * fps)
    return fps, n_frames, width, height, duration, rotation


# ffmpeg's report of a display matrix: "Display Matrix: rotation of -90.00
# degrees" (ffmpeg 7 and later) or "displaymatrix: rotation of -90.00 degrees".
_ROTATION = re.compile(r"display ?matrix: rotation of (-?[0-9.]+) degrees", re.IGNORECASE)


def _ffmpeg_report(path: str) -> str:
    """What ``ffmpeg -i`` says of ``path`` (its streams, side data...): read
    once per probe, for moviepy's parser and for the display rotation."""
    from moviepy.config import FFMPEG_BINARY

    try:
        report = subprocess.run([FFMPEG_BINARY, "-hide_banner", "-nostdin", "-i", path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, timeout=60, check=False).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(path, f"cannot read as a video: {exc}") from None
    return report.decode("utf-8", "ignore")


def _display_rotation(report: str) -> int:
    """The first video stream's display rotation in ffmpeg's ``report``,
    degrees counter-clockwise in {0, 90, 180, 270} (0 without a display matrix)."""
    found = _ROTATION.search(report)
    if found is None:
        return 0
    return int(round(float(found.group(1)) / 90.0)) * 90 % 360


def _parse_infos(path: str, report: str) -> dict[str, Any]:
    """ffmpeg's view of the file (moviepy's parser of ``report``), fps from
    the base rate."""
    from moviepy.video.io.ffmpeg_reader import FFmpegInfosParser

    try:
        infos = FFmpegInfosParser(report, path, fps_source="tbr").parse()
    except (OSError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # Malformed headers surface as parser errors of several kinds;
        # ffmpeg's own complaint, the report's last line, is the informative part.
        raise InputError(path, f"cannot read as a video: {_reason(report or exc)}") from exc
    if not infos.get("video_found"):
        raise InputError(path, "has no video stream")
    return infos


def _reason(exc: object) -> str:
    """The informative line of an error (an exception, or ffmpeg's report)."""
    text = str(exc)
    if "failed to read the first frame" in text:
        return "the first frame cannot be decoded"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # moviepy puts ffmpeg's own message last; it is the informative part.
    return lines[-1] if lines else type(exc).__name__


def _choose_fps(base: float, average: float) -> float:
    """The video's own rate: the base rate, unless it is implausible.

    A base rate far above the average one (more than 1.5 times, or above
    210) comes from irregular timestamps (a spliced or trimmed file), not
    from the picture rate; sampling at it would repeat most pictures, so the
    average rate is used then.
    """
    if base <= 0:
        return average
    if average <= 0:
        return base if base <= _MAX_PLAUSIBLE_FPS else 0.0
    if base > _MAX_PLAUSIBLE_FPS or base > _MAX_BASE_OVER_AVERAGE * average:
        return average
    return base


def probe_video(path: str | os.PathLike[str], count: bool = False) -> VideoInfo:
    """Probe a video file: frame rate, frame count, size and duration.

    Args:
        path: a video file ffmpeg can read.
        count: if True, decode the whole file to count its frames exactly
            (same decoding as :func:`iter_frame_batches`); otherwise
            ``n_frames`` is the header estimate ``int(duration * fps)``.

    Returns:
        VideoInfo.

    Raises:
        InputError: the file is missing, unreadable, or has no video stream.
    """
    path = os.fspath(path)
    fps, n_frames, width, height, duration, rotation = _probe_header(path)
    info = VideoInfo(path, fps, n_frames, width, height, duration, rotation)
    if count:
        n_frames = sum(len(batch) for _, batch in _decode(info, batch_size=64))
        info = VideoInfo(path, fps, n_frames, width, height, duration, rotation)
    return info


def _rate_arg(fps: float) -> str:
    # 30000/1001 rather than 29.97002997 so ffmpeg keeps the exact NTSC rate.
    return str(Fraction(fps).limit_denominator(1001))


def _ffmpeg_command(info: VideoInfo) -> list[str]:
    from moviepy.config import FFMPEG_BINARY

    return [
        FFMPEG_BINARY, "-nostdin", "-loglevel", "error",
        "-i", info.path,
        "-an", "-sn", "-dn",
        "-vf", f"scale={info.width}:{info.height}",
        "-r", _rate_arg(info.fps),
        "-f", "image2pipe", "-pix_fmt", "rgb24", "-vcodec", "rawvideo",
        "-",
    ]


def _read_into(stream: io.BufferedIOBase, buffer: np.ndarray) -> int:
    """Fill ``buffer`` from ``stream``, looping over short pipe reads.

    Returns the number of bytes read (less than its size at end of stream).
    """
    # numpy declares its buffer protocol to type checkers on Python >= 3.12 only.
    view = memoryview(buffer).cast("B")  # type: ignore[arg-type, unused-ignore]
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class VideoFrames:
    """The frames of one video, batch by batch, and what decoding found.

    Iterating yields ``(start, frames)`` exactly as :func:`iter_frame_batches`
    (which is built on it). Once the iteration has ended, :attr:`decoded`
    is the number of frames that decoded and :attr:`decode_error` ffmpeg's
    last complaint ("partial file", "Invalid NAL unit size"...), None if
    it had none; :attr:`ends_early` then says whether the video stopped
    before the frame count of its header because of such an error (a
    truncated or damaged file), as opposed to a container whose duration
    merely includes a longer audio track.

    Args:
        path: a video file ffmpeg can read (probed at once; an
            InputError if it cannot be read).
        batch_size: frames per batch.
        info: its :class:`VideoInfo`, if already probed.
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 32, info: VideoInfo | None = None) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.info = info if info is not None else probe_video(path)
        self.batch_size = int(batch_size)
        self.decoded = 0
        self.decode_error: str | None = None

    @property
    def expected(self) -> int:
        """The frame count the header claims (``info.n_frames``, an estimate)."""
        return self.info.n_frames

    @property
    def ends_early(self) -> bool:
        """True when decoding stopped, with an error, before the header's count."""
        return self.decode_error is not None and self.decoded < self.expected

    def __iter__(self) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
        info, batch_size = self.info, self.batch_size
        self.decoded, self.decode_error = 0, None
        with tempfile.TemporaryFile() as errlog:
            # stderr goes to a file: a pipe nobody reads could fill up and stall
            # ffmpeg on a file with many decoding errors.
            proc = subprocess.Popen(
                _ffmpeg_command(info), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errlog,
            )
            start = 0
            finished = False
            stdout = cast(io.BufferedIOBase, proc.stdout)  # PIPE: a buffered reader
            reader = _Prefetcher(stdout, batch_size, (info.height, info.width, 3))
            try:
                for frames in reader:
                    yield start, frames
                    start += len(frames)
                    self.decoded = start
                finished = True
            finally:
                if not finished and proc.poll() is None:
                    proc.kill()  # the caller stopped early: ffmpeg's end is ours
                reader.close()
                stdout.close()
                proc.wait()
            errlog.seek(0)
            message = errlog.read().decode("utf-8", "replace").strip()
            self.decode_error = _last_message(message)
            if proc.returncode != 0:
                # Killed (the out-of-memory killer, a signal) or failed: the
                # frames read are not the video's, whatever they number.
                raise InputError(info.path, _abnormal_end(proc.returncode, start,
                                                          self.decode_error))
            if start == 0:
                raise InputError(
                    info.path,
                    "no frame could be decoded"
                    + (f": {self.decode_error}" if self.decode_error else ""),
                )


class _Prefetcher:
    """Batches of frames read from ffmpeg's pipe in a thread, one batch ahead.

    While the caller works on one batch (face detection), the next one is
    read (the read releases the GIL, and ffmpeg decodes in its own process):
    decoding and detection overlap. Iterating yields uint8 arrays
    (n, *shape), n = ``batch_size`` but for the last one; a read error is
    raised in the caller. :meth:`close` stops the thread (kill the process
    first so that a pending read returns).
    """

    _END = object()

    def __init__(self, stream: io.BufferedIOBase, batch_size: int,
                 shape: tuple[int, ...]) -> None:
        self.stream, self.batch_size, self.shape = stream, batch_size, shape
        # A batch of frames, an exception or _END.
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        frame_bytes = int(np.prod(self.shape))
        try:
            while not self.stopped.is_set():
                frames = np.empty((self.batch_size, *self.shape), np.uint8)
                n = _read_into(self.stream, frames) // frame_bytes
                if n:
                    self._put(frames[:n])
                if n < self.batch_size:
                    break
        except (OSError, ValueError) as exc:  # a closed or broken pipe
            self._put(exc)
        self._put(self._END)

    def _put(self, item: object) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[npt.NDArray[np.uint8]]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


def _abnormal_end(returncode: int, decoded: int, message: str | None) -> str:
    """The problem of a decoder that did not end normally (exit status ``returncode``)."""
    if returncode < 0:
        try:
            how = f"was killed ({signal.Signals(-returncode).name})"
        except ValueError:
            how = f"was killed (signal {-returncode})"
    else:
        how = f"failed (exit status {returncode})"
    return (f"the decoder (ffmpeg) {how} after {decoded} frames"
            + (f": {message}" if message else "")
            + "; the video was not read to its end, nothing of it is kept")


def _last_message(log: str) -> str | None:
    """ffmpeg's last line without its ``[component @ 0x...]`` prefix, or None."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    while last.startswith("[") and "] " in last:
        last = last.split("] ", 1)[1].strip()
    return last or lines[-1]


def _decode(info: VideoInfo, batch_size: int) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """Yield ``(start, frames)`` from one ffmpeg process; see iter_frame_batches."""
    yield from VideoFrames(info.path, batch_size, info)


def iter_frame_batches(path: str | os.PathLike[str], batch_size: int = 32) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """Decode a video in batches of frames, streaming.

    Frames are sampled at the video's own rate (``probe_video(path).fps``):
    frame ``i`` is the picture shown at time ``i / fps``. The next batch is
    read in a thread while the caller works on the current one (decoding
    overlaps the caller's work), so at most three batches are held in
    memory at a time; the ffmpeg process is ended when the iterator
    is exhausted, closed, or garbage-collected, or when decoding fails.

    Exactly the decodable frames are yielded, whatever the header claims; a
    file that ends early or has a truncated last frame yields fewer frames
    than ``VideoInfo.n_frames``. The batch boundaries do not change the
    frames (``batch_size`` only trades memory for per-call overhead).
    :class:`VideoFrames` also tells, after the iteration, how many frames
    decoded and whether the file ended early (truncated).

    Args:
        path: a video file ffmpeg can read.
        batch_size: frames per yielded batch (the last one may be shorter).

    Yields:
        ``(start_index, frames)``: the index of the batch's first frame in
        the video, and a uint8 array of shape (n, H, W, 3), RGB.

    Raises:
        InputError: the file is missing, unreadable, has no video stream,
            not a single frame decodes, or the decoder ends abnormally (killed,
            e.g. by the out-of-memory killer, or failing): raised after the
            frames it gave, which are then not the whole video.
    """
    yield from VideoFrames(path, batch_size)


def read_image(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Read a still image as uint8 RGB, shape (H, W, 3).

    Grey, palette and RGBA images are converted to RGB (alpha is dropped);
    the EXIF orientation of photos is applied.

    Raises:
        InputError: the file is missing or is not an image PIL can read.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError(path, "file not found")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise InputError(path, "not an image file PIL can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"cannot decode image: {exc}") from exc
