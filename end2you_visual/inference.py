"""Running a model over whole sequences, and `e2y-visual test`.

A sequence is predicted window by window with the recurrent state carried
from one window to the next (End2You reset it at every window), so the
result equals one pass over the whole sequence while memory stays bounded
by the window::

    from end2you_visual.inference import predict_sequence, run_test
    preds = predict_sequence(model, ("data/p01.h5", 0), window=150)  # (T, outputs)
    result = run_test(model, ["data/test"], "out/test", plot=True)
    result.metrics["metrics"]["pooled"]["arousal"]["ccc"]

:func:`predict_sequences` is the engine behind both. It runs ``batch``
sequences side by side (one per *lane*; a lane takes the next sequence when
its own ends, with a fresh state), so one forward pass holds up to
``batch x window`` frames. A pool of reader threads fills host buffers
(pinned on CUDA) a few steps ahead; uncompressed end2you-visual files are
read with ``os.preadv`` straight from the HDF5 chunks into those buffers
(no GIL held, no extra copy), other files through h5py. On CUDA the
host-to-device copies run on their own stream and the outputs come back
asynchronously, so reading, copying and computing overlap.

Outputs are ``model.activate``-d by default: values for regression heads,
probabilities for classification heads.
"""
import contextlib
import json
import math
import os
import queue
import shutil
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from . import __version__
from .data import SequenceFile, SequenceInfo, open_files
from .devices import resolve_device
from .errors import InputError
from .files import check_writable
from .hdf5 import FORMAT_NAME

__all__ = [
    "StreamingPredictor", "predict_sequence", "predict_sequences",
    "plan_steps", "check_model_fits", "run_test", "TestResult", "load_predictions",
    "SequencePrediction", "PREDICTIONS_FORMAT",
]

PREDICTIONS_FORMAT = "end2you-visual-predictions"
PREDICTIONS_VERSION = 1
HEAD_LABEL_KIND = {"regression": "continuous", "multilabel": "multilabel",
                   "multiclass": "multiclass"}
PRECISIONS = ("auto", "bf16", "fp32")


# ------------------------------------------------------------------- precision

def _autocast(device, precision):
    """The autocast context for ``precision`` on ``device`` (a factory)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _base(model):
    return getattr(model, "_orig_mod", model)  # a torch.compile wrapper


def _prepare(model, device):
    """Move ``model`` to ``device`` in eval mode (channels_last on CUDA)."""
    base = _base(model)
    base.eval().to(device)
    if device.type == "cuda":
        base.to(memory_format=torch.channels_last)
    return base


# ------------------------------------------------------------------ streaming

class StreamingPredictor:
    """Predict one sequence chunk by chunk, carrying the recurrent state.

    ``predictor(frames)`` takes the next frames of the sequence (uint8
    (n, H, W, 3) array or tensor) and returns their predictions, a float32
    (n, outputs) array. :meth:`reset` starts a new sequence. Used by
    :mod:`end2you_visual.predict` (frames straight from the face pipeline).
    """

    def __init__(self, model, device="auto", precision="auto", activate=True):
        self.device = resolve_device(device)
        self.model = model
        self.base = _prepare(model, self.device)
        self.autocast = _autocast(self.device, precision)
        self.activate = activate
        self.state = None

    def reset(self):
        self.state = None

    def __call__(self, frames):
        x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray)
                            else frames)
        if len(x) == 0:
            return np.zeros((0, self.base.config["outputs"]), np.float32)
        with torch.inference_mode(), self.autocast():
            out, self.state = self.model(x[None].to(self.device), self.state, return_state=True)
            out = out.float()
            if self.activate:
                out = self.base.activate(out)
        return out[0].cpu().numpy()


# ------------------------------------------------------------------ reading

class _FrameReader:
    """Reads rows of one HDF5 file's frames into caller-provided arrays.

    Uncompressed end2you-visual files whose chunks hold whole frames are
    read with ``os.preadv`` from the chunks' byte offsets (thread-parallel:
    no GIL held during the read); other files through h5py.
    """

    def __init__(self, seqfile):
        self.file = seqfile
        self._lock = threading.Lock()
        self._fd = None
        self._h5 = None
        self._chunk_offsets = None  # byte offset of chunk k, -1 if unallocated
        self._chunk_rows = 0
        self._frame_bytes = 0
        self.fast = seqfile.format == FORMAT_NAME and self._index_chunks()

    def _index_chunks(self):
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

            def record(info):
                offsets[info.chunk_offset[0] // rows] = info.byte_offset

            try:
                dset.id.chunk_iter(record)
            except (AttributeError, RuntimeError):  # older HDF5: one call per chunk
                for i in range(dset.id.get_num_chunks()):
                    record(dset.id.get_chunk_info(i))
        self._chunk_offsets, self._chunk_rows = offsets, rows
        self._frame_bytes = s * s * 3
        return True

    def _open(self):
        with self._lock:
            if self.fast and self._fd is None:
                self._fd = os.open(self.file.path, os.O_RDONLY)
            if not self.fast and self._h5 is None and self.file.format == FORMAT_NAME:
                self._h5 = h5py.File(self.file.path, "r")

    def read_into(self, info, start, stop, out):
        """Frames ``start:stop`` of sequence ``info`` into ``out`` (uint8 (n, S, S, 3))."""
        self._open()
        a, b = info.start + start, info.start + stop
        if self.fast:
            self._pread(a, b, out)
        elif self._h5 is not None:
            self._h5["frames"].read_direct(out, np.s_[a:b], np.s_[0:b - a])
        else:  # End2You files: the reader's own conversion (cached once)
            with self._lock:
                out[:] = self.file.read(info, start, stop).frames

    def _pread(self, a, b, out):
        if not out.flags.c_contiguous:
            raise ValueError("read_into needs a C-contiguous array")
        view = memoryview(out.reshape(-1))
        rows, fb, offsets = self._chunk_rows, self._frame_bytes, self._chunk_offsets
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

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._h5 is not None:
                self._h5.close()
                self._h5 = None


def _pread_full(fd, view, offset, path):
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise InputError(path, f"file ends early (reading {len(view)} bytes at {offset})")
        got += n


# ---------------------------------------------------------------- scheduling

@dataclass(frozen=True)
class _Item:
    """One lane's rows in one step: sequence ``seq``, frames ``start:stop``."""

    lane: int
    seq: int
    start: int
    stop: int


def plan_steps(lengths, lanes, window):
    """The forward passes needed for sequences of ``lengths``.

    Each step is a list of :class:`_Item` (at most one per lane). Lanes take
    sequences longest first; a lane's consecutive items of a sequence carry
    the state, a new sequence starts from zeros (``start == 0``).
    """
    order = deque(sorted((q for q, n in enumerate(lengths) if n > 0),
                         key=lambda q: (-lengths[q], q)))
    at = [None] * max(1, int(lanes))
    steps = []
    while True:
        items = []
        for lane in range(len(at)):
            if at[lane] is None and order:
                at[lane] = (order.popleft(), 0)
            if at[lane] is None:
                continue
            q, start = at[lane]
            stop = lengths[q] if window is None else min(start + int(window), lengths[q])
            items.append(_Item(lane, q, start, stop))
            at[lane] = (q, stop) if stop < lengths[q] else None
        if not items:
            return steps
        steps.append(items)


class _Buffers:
    """A ring of flat uint8 host buffers (pinned on CUDA), reused step after step."""

    def __init__(self, count, nbytes, pin):
        self.free = queue.Queue()
        for _ in range(count):
            self.free.put((torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin), None))

    def take(self):
        buf, event = self.free.get()
        if event is not None:
            event.synchronize()  # its last copy to the device has finished
        return buf

    def give(self, buf, event=None):
        self.free.put((buf, event))


def _fill(buf, items, t, frame_shape, sequences, readers):
    """Read one step's frames into ``buf``: a uint8 tensor (n, t, S, S, 3)."""
    x = buf[:len(items) * t * math.prod(frame_shape)].view(len(items), t, *frame_shape)
    arr = x.numpy()
    for i, item in enumerate(items):
        seqfile, info = sequences[item.seq]
        n = item.stop - item.start
        readers[id(seqfile)].read_into(info, item.start, item.stop, arr[i, :n])
        if n < t:
            arr[i, n:] = 0  # padding after a sequence's end
    return x


def _gather_state(lane_state, items, rows, is_tuple):
    """The (num_layers, rows, hidden) state for this step's rows, or None (all new)."""
    slices = [lane_state.get(it.lane) if it.start > 0 else None for it in items]
    slices += [None] * (rows - len(items))
    if all(s is None for s in slices):
        return None
    template = next(s for s in slices if s is not None)
    parts = tuple(torch.cat([s[k] if s is not None else torch.zeros_like(template[k])
                             for s in slices], dim=1)
                  for k in range(len(template)))
    return parts if is_tuple else parts[0]


def _scatter_state(lane_state, items, state, lengths):
    parts = state if isinstance(state, tuple) else (state,)
    for i, it in enumerate(items):
        if it.stop < lengths[it.seq]:
            lane_state[it.lane] = tuple(p[:, i:i + 1] for p in parts)
        else:
            lane_state.pop(it.lane, None)


def predict_sequences(model, sequences, window=150, batch=8, device="auto", precision="auto",
                      activate=True, workers=None, prefetch=3, static_shapes=False,
                      progress=None):
    """Predict many sequences of HDF5 files, ``batch`` of them side by side.

    Args:
        model: a :class:`~end2you_visual.models.VisualModel` (or its
            ``torch.compile`` wrapper); it is moved to ``device`` (channels_last
            on CUDA) and used in eval mode (its train/eval mode is restored).
        sequences: list of ``(SequenceFile, SequenceInfo)``; all files must
            have the same frame size.
        window: frames per forward pass of a sequence (state carried between
            windows); ``None``: each sequence in one pass (memory then grows
            with the longest sequence: 3 x batch x its frames on the host).
        batch: sequences per forward pass (lanes).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU),
            ``"bf16"`` or ``"fp32"``.
        activate: apply ``model.activate`` (probabilities for classification
            heads); False: raw outputs.
        workers: reader threads (default ``min(4, cpus)``).
        prefetch: steps read ahead of the computation.
        static_shapes: pad every step to ``(batch, window)`` frames (for
            ``torch.compile`` / CUDA graphs: one input shape).
        progress: optional callable ``progress(frames)``, called with the
            number of frames finished after each step (e.g. ``tqdm.update``).

    Returns:
        One float32 array (length, outputs) per sequence, in order.
    """
    device = resolve_device(device)
    base = _prepare(model, device)
    results = [np.zeros((info.length, base.config["outputs"]), np.float32)
               for _, info in sequences]
    lengths = [info.length for _, info in sequences]
    if not any(lengths):
        return results
    sizes = {f.frame_size for f, _ in sequences}
    if len(sizes) != 1:
        raise ValueError(f"sequences of several frame sizes {sorted(sizes)}: predict each "
                         "size separately")
    lanes = min(int(batch), sum(1 for n in lengths if n > 0))
    steps = plan_steps(lengths, lanes, window)
    t_max = max(it.stop - it.start for step in steps for it in step)
    if static_shapes and window is not None:
        t_max = int(window)
    prefetch = max(1, int(prefetch)) if window is not None else 1  # whole sequences: big
    runner = _Runner(model, base, device, precision, activate, lengths, lanes,
                     lanes if static_shapes else None)
    reader = _StepReader(sequences, (sizes.pop(),) * 2 + (3,), lanes, t_max, static_shapes,
                         prefetch, workers or min(4, os.cpu_count() or 1), device.type == "cuda")
    was_training = base.training
    try:
        with torch.inference_mode():
            last = None
            for step, buf, host in reader.iterate(steps):
                current = (step,) + runner.forward(step, buf, host, reader.buffers)
                if last is not None:
                    _finish(results, last, progress)
                last = current
            _finish(results, last, progress)
    finally:
        reader.close()
        base.train(was_training)
    return results


class _StepReader:
    """Reads steps' frames ahead of the computation, in a pool of threads."""

    def __init__(self, sequences, frame_shape, lanes, t_max, static_shapes, prefetch, workers,
                 pin):
        self.sequences, self.frame_shape = sequences, frame_shape
        self.t_max, self.static_shapes, self.prefetch = t_max, static_shapes, prefetch
        self.readers = {id(f): _FrameReader(f) for f in {id(f): f for f, _ in sequences}.values()}
        self.buffers = _Buffers(prefetch + 2, lanes * t_max * math.prod(frame_shape), pin)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="e2y-read")
        self.pending = deque()

    def _load(self, step):
        t = self.t_max if self.static_shapes else max(it.stop - it.start for it in step)
        buf = self.buffers.take()
        try:
            return buf, _fill(buf, step, t, self.frame_shape, self.sequences, self.readers)
        except BaseException:
            self.buffers.give(buf)
            raise

    def iterate(self, steps):
        """Yield ``(step, buffer, frames)``; the caller gives the buffer back."""
        for k in range(min(self.prefetch, len(steps))):
            self.pending.append(self.pool.submit(self._load, steps[k]))
        for k, step in enumerate(steps):
            buf, host = self.pending.popleft().result()
            if k + self.prefetch < len(steps):
                self.pending.append(self.pool.submit(self._load, steps[k + self.prefetch]))
            yield step, buf, host

    def close(self):
        for fut in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True)
        for reader in self.readers.values():
            reader.close()


class _Runner:
    """Forward passes of steps, each lane's recurrent state carried to its next window."""

    def __init__(self, model, base, device, precision, activate, lengths, lanes, pad_rows):
        self.model, self.base, self.device = model, base, device
        self.autocast = _autocast(device, precision)
        self.activate, self.lengths, self.pad_rows = activate, lengths, pad_rows
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.lane_state, self.is_tuple = {}, False

    def forward(self, step, buf, host, buffers):
        """Start one step; returns ``(outputs on the host, event to wait for)``."""
        rows = self.pad_rows or len(step)
        if rows > len(step):  # static shapes: idle lanes get zero frames
            padded = torch.zeros((rows,) + tuple(host.shape[1:]), dtype=torch.uint8)
            padded[:len(step)] = host
            host = padded
        x, release = _to_device(host, self.device, self.copy_stream, buffers, buf)
        state = _gather_state(self.lane_state, step, rows, self.is_tuple)
        with self.autocast():
            out, new_state = self.model(x, state, return_state=True)
        out = out.float()
        del x
        release()
        if self.activate:
            out = self.base.activate(out)
        if new_state is not None:
            self.is_tuple = isinstance(new_state, tuple)
            _scatter_state(self.lane_state, step, new_state, self.lengths)
        return _to_host(out, self.copy_stream is not None)


def _to_device(host, device, copy_stream, buffers, buf):
    """``host`` frames on ``device``; returns them and a function releasing ``buf``."""
    if copy_stream is None:  # CPU: the model reads the buffer itself
        return host.to(device), lambda: buffers.give(buf)
    with torch.cuda.stream(copy_stream):
        x = host.to(device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(copy_stream)
    current = torch.cuda.current_stream(device)
    current.wait_event(done)
    x.record_stream(current)
    buffers.give(buf, done)
    return x, lambda: None


def _to_host(out, cuda):
    """Start copying ``out`` to the host; ``_store`` waits for it."""
    if not cuda:
        return out.cpu().numpy(), None
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _finish(results, last, progress):
    """Wait for a step's outputs and put them in place."""
    n = _store(results, *last)
    if progress is not None:
        progress(n)


def _store(results, step, out_host, event):
    if event is not None:
        event.synchronize()
    out = out_host.numpy() if isinstance(out_host, torch.Tensor) else out_host
    n = 0
    for i, it in enumerate(step):
        results[it.seq][it.start:it.stop] = out[i, :it.stop - it.start]
        n += it.stop - it.start
    return n


# ------------------------------------------------------------ one sequence

def _as_sequence(source, end2you_fps=None):
    """``(SequenceFile, SequenceInfo)`` for an HDF5 source, or None."""
    if isinstance(source, (str, os.PathLike)):
        source = (source, 0)
    if isinstance(source, SequenceFile):
        source = (source, 0)
    if (isinstance(source, tuple) and len(source) == 2
            and isinstance(source[0], (str, os.PathLike, SequenceFile))):
        seqfile, seq = source
        if not isinstance(seqfile, SequenceFile):
            seqfile = SequenceFile(seqfile, end2you_fps=end2you_fps)
        if isinstance(seq, SequenceInfo):
            return seqfile, seq
        if isinstance(seq, str):
            found = [s for s in seqfile.sequences if s.name == seq]
            if not found:
                raise InputError(seqfile.path, f"no sequence named {seq!r}")
            return seqfile, found[0]
        return seqfile, seqfile.sequences[int(seq)]
    return None


def predict_sequence(model, frames_source, window=None, device="auto", precision="auto",
                     activate=True, end2you_fps=None):
    """Predictions for one whole sequence, ``window`` frames at a time.

    Args:
        model: a :class:`~end2you_visual.models.VisualModel`.
        frames_source: one of
            * frames: a uint8 array or tensor (T, H, W, 3) (or (T, 3, H, W));
            * an HDF5 sequence: a path or :class:`SequenceFile` (sequence 0),
              or ``(path_or_file, index_or_name_or_SequenceInfo)``; read window
              by window (memory bounded by the window);
            * any other iterable of frame chunks (n_i, H, W, 3), streamed.
        window: frames per forward pass; the recurrent state is carried from
            window to window, so the result equals one pass (``None``).
        device, precision, activate: see :func:`predict_sequences`.

    Returns:
        float32 array (T, outputs).
    """
    seq = _as_sequence(frames_source, end2you_fps)
    if seq is not None:
        return predict_sequences(model, [seq], window=window, batch=1, device=device,
                                 precision=precision, activate=activate)[0]
    predictor = StreamingPredictor(model, device, precision, activate)
    if isinstance(frames_source, (np.ndarray, torch.Tensor)):
        step = len(frames_source) if window is None else int(window)
        chunks = (frames_source[i:i + step] for i in range(0, len(frames_source), max(step, 1)))
    else:
        chunks = frames_source
    outs = [predictor(chunk) for chunk in chunks]
    outs = [o for o in outs if len(o)]
    if not outs:
        return np.zeros((0, predictor.base.config["outputs"]), np.float32)
    return np.concatenate(outs)


# ---------------------------------------------------------------- checks

def check_model_fits(model, files):
    """Per file, the label columns matching the model's outputs (None: unlabelled).

    A labelled file must have the label kind of the model's head
    (regression -> continuous, multilabel -> multilabel, multiclass ->
    multiclass) and a label column for every output name; a multiclass
    file must have exactly the model's classes (in any order).

    Raises:
        InputError: naming the first file that does not fit.
    """
    base = _base(model)
    names, head = base.label_names, base.head_kind
    kind = HEAD_LABEL_KIND[head]
    columns = []
    for f in files:
        if f.label_kind == "none" or not f.label_names:
            columns.append(None)
            continue
        what = f"the model ({head} head, outputs {names})"
        if f.label_kind != kind:
            raise InputError(f.path, f"has {f.label_kind} labels {f.label_names}, which "
                             f"{what} cannot be tested on (it needs {kind} labels)")
        missing = [n for n in names if n not in f.label_names]
        extra = [n for n in f.label_names if n not in names] if kind == "multiclass" else []
        if missing or extra:
            raise InputError(f.path, f"label names {f.label_names} do not match {what}"
                             + (f": no label for {missing}" if missing else "")
                             + (f"; classes the model does not know: {extra}" if extra else ""))
        columns.append(np.array([f.label_names.index(n) for n in names]))
    return columns


def _read_rows(seqfile, info, cols, kind):
    """Timestamps, face_found and targets (or None) of one sequence; checks labels."""
    clip = seqfile.read(info, 0, info.length, frames=False)
    targets = None
    if cols is not None:
        targets = np.asarray(clip.labels, np.float32)[:, cols]
        bad = ~np.isfinite(targets).all(axis=1)
        if bad.any():
            raise InputError(seqfile.path, f"sequence {info.name!r}: labels hold NaN or "
                             f"infinity at row {int(np.argmax(bad))} (of the sequence)")
        if kind != "continuous" and not np.isin(targets, (0.0, 1.0)).all():
            raise InputError(seqfile.path, f"sequence {info.name!r}: {kind} labels must be 0/1")
        if kind == "multiclass" and not (targets.sum(axis=1) == 1).all():
            row = int(np.argmax(targets.sum(axis=1) != 1))
            raise InputError(seqfile.path, f"sequence {info.name!r}: multiclass labels must be "
                             f"one-hot (row {row} is not)")
    return (np.asarray(clip.timestamps, np.float64), np.asarray(clip.face_found, bool), targets)


def _stems(sequences):
    """A unique, file-system-safe CSV stem per sequence."""
    def clean(text):
        text = str(text).replace("\\", "/").strip("/")
        return "__".join(p for p in text.split("/") if p not in ("", ".", "..")) or "sequence"

    first = [clean(info.name) for _, info in sequences]
    counts = {s: first.count(s) for s in first}
    stems, used = [], set()
    for (f, info), stem in zip(sequences, first):
        if counts[stem] > 1:
            stem = f"{clean(f.path.stem)}__{stem}"
        base, i = stem, 2
        while stem in used:
            stem, i = f"{base}__{i}", i + 1
        used.add(stem)
        stems.append(stem)
    return stems


# ------------------------------------------------------------------- run_test

@dataclass
class SequencePrediction:
    """The predictions of one sequence (see :func:`load_predictions`)."""

    name: str             # CSV stem
    file: str             # the HDF5 file
    sequence: str         # the sequence's name in that file
    fps: float
    time: np.ndarray      # (T,) seconds
    predictions: np.ndarray  # (T, outputs), activated
    face_found: np.ndarray   # (T,) bool
    labels: np.ndarray = None  # (T, outputs) targets in output order, or None


@dataclass
class TestResult:
    """What :func:`run_test` wrote and measured."""

    __test__ = False  # not a pytest test class

    out_dir: Path
    label_names: list
    sequences: list                   # SequencePrediction per sequence
    csv_paths: list
    predictions_path: Path
    metrics_path: Path = None         # None when no file has labels
    metrics: dict = None              # the content of metrics.json
    plot_paths: list = field(default_factory=list)
    seconds: float = 0.0              # model time (reading + inference)
    warnings: list = field(default_factory=list)

    @property
    def frames(self):
        return sum(len(s.time) for s in self.sequences)

    @property
    def frames_per_second(self):
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def _load_model(model, device):
    if isinstance(model, (str, os.PathLike)):
        from .zoo import load_pretrained

        return load_pretrained(model, device=str(device))
    return model


def model_title(model):
    """How plots name ``model``: the registered name or checkpoint path as
    given, else its architecture (``"resnet18 model"``)."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return f"{_base(model).config.get('arch', 'a')} model"


def earlier_outputs(out_dir):
    """The files of an earlier :func:`run_test` in ``out_dir`` (the only
    files ``overwrite=True`` removes): ``predictions/*.csv``,
    ``predictions.h5``, ``metrics.json``, ``plots/*.png``."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [out_dir / n for n in ("predictions.h5", "metrics.json")]
    found = [p for p in found if p.is_file()]
    for sub, pattern in (("predictions", "*.csv"), ("plots", "*.png")):
        if (out_dir / sub).is_dir():
            found += sorted(p for p in (out_dir / sub).glob(pattern) if p.is_file())
    return found


def check_test_out(out_dir, overwrite=False):
    """Refuse an ``out_dir`` that cannot be written, or that holds an earlier
    test run's outputs (unless ``overwrite``): a finished run is never
    replaced, nor mixed with a new one, unless asked.

    Raises:
        InputError: naming the folder (and ``--overwrite``).
    """
    check_writable(out_dir, "--out")
    old = earlier_outputs(out_dir)
    if old and not overwrite:
        shown = ", ".join(str(p.relative_to(out_dir)) for p in old[:3])
        more = f" and {len(old) - 3} more" if len(old) > 3 else ""
        raise InputError(out_dir, f"already holds the outputs of a test run ({shown}{more}); "
                         "use --overwrite to replace them, or choose another --out")
    return old


def run_test(model, data_paths, out_dir, window=150, device="auto", include_no_face=True,
             plot=False, batch=8, precision="auto", max_plots=100, end2you_fps=None,
             workers=None, static_shapes=False, progress=None, overwrite=False):
    """Predict every sequence of HDF5 files and score the predictions.

    Writes into ``out_dir``:

    * ``predictions/<sequence>.csv``: ``time``, one column per output
      (named by ``model.label_names``, activated: values or probabilities),
      ``face_found`` (1/0): the format ``e2y-visual evaluate`` reads;
    * ``predictions.h5``: everything for programs (:func:`load_predictions`);
    * ``metrics.json`` when some file has labels: continuous ->
      :func:`~end2you_visual.metrics.evaluate_continuous` (per file and
      pooled), multiclass -> ``evaluate_categorical`` (argmax), multilabel
      -> ``evaluate_multilabel`` (threshold 0.5), under the key ``metrics``;
    * with ``plot``: ``plots/<sequence>.png`` (predictions against the
      labels, at most ``max_plots`` sequences of 2 frames or more) and, for
      multiclass data, ``plots/confusion.png``.

    Nothing is written before all predictions and metrics are computed;
    then the files go to a hidden staging folder in ``out_dir`` and are
    moved into place (``os.replace``) only when all of them are complete:
    an error leaves nothing half-written. An ``out_dir`` holding an earlier
    run's outputs is refused before any work unless ``overwrite``; then
    those files (:func:`earlier_outputs`, nothing else) are removed just
    before the new ones move in, so runs are never mixed.

    Args:
        model: a VisualModel, or a registered name / checkpoint path.
        data_paths: HDF5 files and/or folders.
        out_dir: output folder (created).
        window: frames per forward pass (state carried across windows).
        include_no_face: score frames without a face too (False: only
            frames with ``face_found``).
        batch: sequences predicted side by side.
        end2you_fps: frame rate for End2You files (they store none).
        workers, static_shapes: see :func:`predict_sequences`.
        progress: ``progress(frames)`` after each step (see
            :func:`predict_sequences`), or True: a tqdm bar over all the
            frames to predict.
        overwrite: replace the outputs of an earlier run in ``out_dir``.

    Raises:
        InputError: a bad device, an ``out_dir`` that cannot be written or
            holds an earlier run (without ``overwrite``), unreadable data,
            labels that do not fit the model's outputs (naming the file,
            before any prediction), NaN labels.
    """
    device = resolve_device(device)
    out_dir = Path(out_dir)
    check_test_out(out_dir, overwrite)
    title = model_title(model)
    model = _load_model(model, device)
    base = _base(model)
    files = open_files(data_paths, end2you_fps=end2you_fps)
    columns = check_model_fits(base, files)
    kind = HEAD_LABEL_KIND[base.head_kind]
    sequences = [(f, info) for f in files for info in f.sequences]
    cols_of = {id(f): c for f, c in zip(files, columns)}
    rows = [_read_rows(f, info, cols_of[id(f)], kind) for f, info in sequences]
    warned = _warnings(base, files, sequences)

    bar = _bar(sum(info.length for _, info in sequences)) if progress is True else None
    started = time.perf_counter()
    preds = [None] * len(sequences)
    try:
        for size in sorted({f.frame_size for f, _ in sequences}):
            index = [q for q, (f, _) in enumerate(sequences) if f.frame_size == size]
            out = predict_sequences(model, [sequences[q] for q in index], window=window,
                                    batch=batch, device=device, precision=precision,
                                    workers=workers, static_shapes=static_shapes,
                                    progress=bar.update if bar is not None else progress)
            for q, p in zip(index, out):
                preds[q] = p
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started

    stems = _stems(sequences)
    results = [SequencePrediction(stem, str(f.path), info.name, info.fps, t, p, face, y)
               for stem, (f, info), p, (t, face, y) in zip(stems, sequences, preds, rows)]
    metrics = _metrics(results, base, kind, include_no_face, window)
    return _write_outputs(out_dir, results, base, metrics, plot, max_plots, seconds,
                          warned, kind, window, title, overwrite)


def _bar(total):
    """The progress bar of :func:`run_test`: frames to predict, ends at 100 %."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="test", leave=False)


def _warnings(base, files, sequences):
    out = []
    size = base.config.get("input_size")
    for f in files:
        if size and f.frame_size != size:
            out.append(f"{f.path}: frames are {f.frame_size}x{f.frame_size} but the model "
                       f"expects {size}x{size}")
    for f, info in sequences:
        if info.length == 0:
            out.append(f"{f.path}: sequence {info.name!r} has no frames")
    for message in out:
        warnings.warn(message, stacklevel=3)
    return out


def _metrics(results, base, kind, include_no_face, window):
    labelled = [r for r in results if r.labels is not None and len(r.time)]
    if not labelled:
        return None
    from . import metrics as M

    names = base.label_names
    keep = [np.ones(len(r.time), bool) if include_no_face else r.face_found for r in labelled]
    summary = {"label_kind": kind, "head": base.head_kind, "outputs": names,
               "include_no_face": bool(include_no_face), "window": window,
               "files": [r.name for r in labelled],
               "unlabelled": [r.name for r in results if r.labels is None],
               "frames": int(sum(k.sum() for k in keep)),
               "frames_total": int(sum(len(r.time) for r in labelled))}
    if summary["frames"] == 0:
        summary["metrics"] = None
        summary["error"] = "every labelled frame is excluded (no face found)"
        return summary
    if kind == "continuous":
        report = M.evaluate_continuous([r.predictions for r in labelled],
                                       [r.labels for r in labelled], names=names,
                                       masks=keep, files=[r.name for r in labelled])
    else:
        scores = np.concatenate([r.predictions[k] for r, k in zip(labelled, keep)])
        targets = np.concatenate([r.labels[k] for r, k in zip(labelled, keep)])
        if kind == "multiclass":
            report = M.evaluate_categorical(scores, targets.argmax(axis=1),
                                            num_classes=len(names), class_names=names)
        else:
            report = M.evaluate_multilabel(scores, targets, 0.5, label_names=names)
    summary["metrics"] = report.to_dict()
    return summary


def _write_h5_file(path, results, base, kind, window):
    with h5py.File(path, "w") as h5:
        offsets = np.cumsum([0] + [len(r.time) for r in results]).astype(np.int64)
        d = len(base.label_names)

        def cat(arrays, shape, dtype):
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

        h5["predictions"] = cat([r.predictions for r in results], (0, d), np.float32)
        h5["timestamps"] = cat([r.time for r in results], (0,), np.float64)
        h5["face_found"] = cat([r.face_found for r in results], (0,), bool)
        if any(r.labels is not None for r in results):
            h5["labels"] = cat([r.labels if r.labels is not None
                                else np.full((len(r.time), d), np.nan, np.float32)
                                for r in results], (0, d), np.float32)
        seq = h5.create_group("sequences")
        seq["offsets"] = offsets
        seq["fps"] = np.array([r.fps for r in results], np.float64)
        text = h5py.string_dtype("utf-8")
        for key, values in (("name", [r.name for r in results]),
                            ("file", [r.file for r in results]),
                            ("sequence", [r.sequence for r in results])):
            seq.create_dataset(key, data=np.array(values, dtype=object), dtype=text)
        h5.attrs.update({
            "format": PREDICTIONS_FORMAT, "version": PREDICTIONS_VERSION,
            "label_names": json.dumps(base.label_names), "head": base.head_kind,
            "label_kind": kind, "window": -1 if window is None else int(window),
            "model_config": json.dumps(base.config),
            "created_by": f"end2you-visual {__version__}",
        })


def _write_outputs(out_dir, results, base, metrics, plot, max_plots, seconds, warned, kind,
                   window, title, overwrite):
    """Write everything into a hidden staging folder, then move it into ``out_dir``
    (with ``overwrite``, the earlier run's files are removed first)."""
    from .postprocess import write_prediction_csv

    names = base.label_names
    created = not out_dir.exists()
    stage = out_dir / f".partial-{os.getpid()}"
    try:
        (stage / "predictions").mkdir(parents=True, exist_ok=True)
        for r in results:
            write_prediction_csv(stage / "predictions" / f"{r.name}.csv", r.time, names,
                                 r.predictions, r.face_found, top_class=kind != "continuous")
        _write_h5_file(stage / "predictions.h5", results, base, kind, window)
        if metrics is not None:
            (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n",
                                                encoding="utf-8")
        if plot:
            _plots(stage / "plots", results, names, metrics, kind, max_plots, title)
        for old in check_test_out(out_dir, overwrite):  # still refused without overwrite
            old.unlink()
        moved = _move_into(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    csv_paths = [out_dir / "predictions" / f"{r.name}.csv" for r in results]
    plots = sorted(p for p in moved if p.parent.name == "plots")
    order = {f"{r.name}.png": i for i, r in enumerate(results)}
    plots.sort(key=lambda p: order.get(p.name, len(order)))
    return TestResult(out_dir=out_dir, label_names=names, sequences=results,
                      csv_paths=csv_paths, predictions_path=out_dir / "predictions.h5",
                      metrics_path=out_dir / "metrics.json" if metrics is not None else None,
                      metrics=metrics, plot_paths=plots, seconds=seconds, warnings=warned)


def _move_into(stage, out_dir):
    """``os.replace`` every file of ``stage`` to the same place under ``out_dir``."""
    moved = []
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved


def _plots(folder, results, names, metrics, kind, max_plots, title):
    from .plots import plot_confusion, plot_predictions

    paths = []
    for r in [r for r in results if len(r.time) >= 2][:max_plots]:
        paths.append(plot_predictions(r.time, r.predictions, r.labels, names,
                                      folder / f"{r.name}.png", face_found=r.face_found,
                                      title=f"{r.name} · model {title}", kind=kind))
    if kind == "multiclass" and metrics is not None and metrics.get("metrics"):
        paths.append(plot_confusion(metrics["metrics"]["confusion"], names,
                                    folder / "confusion.png"))
    return paths


def load_predictions(path):
    """The sequences of a ``predictions.h5`` written by :func:`run_test`.

    Returns:
        ``(label_names, [SequencePrediction, ...])``.
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from err
    with h5:
        if h5.attrs.get("format") != PREDICTIONS_FORMAT:
            raise InputError(path, f"not an {PREDICTIONS_FORMAT} file")
        names = json.loads(h5.attrs["label_names"])
        seq = h5["sequences"]
        offsets = seq["offsets"][:]
        text = {k: [v.decode() if isinstance(v, bytes) else str(v) for v in seq[k][:]]
                for k in ("name", "file", "sequence")}
        preds, times, face = h5["predictions"][:], h5["timestamps"][:], h5["face_found"][:]
        labels = h5["labels"][:] if "labels" in h5 else None
        out = []
        for q in range(len(offsets) - 1):
            a, b = offsets[q], offsets[q + 1]
            y = None if labels is None else labels[a:b]
            if y is not None and np.isnan(y).all() and b > a:
                y = None
            out.append(SequencePrediction(text["name"][q], text["file"][q], text["sequence"][q],
                                          float(seq["fps"][q]), times[a:b], preds[a:b],
                                          face[a:b], y))
    return names, out
