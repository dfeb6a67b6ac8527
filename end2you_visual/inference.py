"""Running a model over whole sequences: the streaming engine.

A sequence is predicted window by window with the recurrent state carried
from one window to the next (End2You reset it at every window), so the
result equals one pass over the whole sequence while memory stays bounded
by the window::

    from end2you_visual.inference import predict_sequence
    preds = predict_sequence(model, ("data/p01.h5", 0), window=150)  # (T, outputs)

:func:`predict_sequences` is the engine behind it and `e2y-visual test`
(:mod:`end2you_visual.testrun`). It runs ``lanes``
sequences side by side (one per *lane*; a lane takes the next sequence when
its own ends, with a fresh state), so one forward pass holds up to
``lanes x window`` frames. A pool of reader threads fills host buffers
(pinned on CUDA) a few steps ahead with the data layer's
:class:`~end2you_visual.framereader.FrameReader` (``os.preadv`` straight
from the HDF5 chunks into those buffers: no GIL held, no extra copy). On CUDA the
host-to-device copies run on their own stream and the outputs come back
asynchronously, so reading, copying and computing overlap.

Outputs are ``model.activate``-d by default: values for regression heads,
probabilities for classification heads.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import (Any, Callable, ContextManager, Deque, Dict, Iterable, Iterator, List,
                    Optional, Sequence, Tuple, Union)

import numpy as np
import torch

from .choices import PRECISIONS
from .data import SequenceFile, SequenceInfo, audio_window, read_step_audio
from .devices import resolve_device
from .errors import InputError
from .framereader import FrameReader
from .models.build import model_inputs
from .models.checkpoint import unwrap_model
from .ranges import COUNT, check_choice, check_window

__all__ = [
    "StreamingPredictor", "predict_sequence", "predict_sequences", "plan_steps",
    "autocast_for", "prepare_model", "load_model", "model_title", "PRECISIONS",
]

# A recurrent layer's state: an LSTM's (h, c) or a GRU's h.
_State = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
# One step's host inputs (frames, audio), None for what the model does not take.
_HostInputs = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]
# A step's outputs on (or on their way to) the host, and the event to wait for.
_HostOutputs = Tuple[Union[np.ndarray, torch.Tensor], Optional[torch.cuda.Event]]


# ------------------------------------------------------------------- precision

def autocast_for(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """The autocast context for ``precision`` on ``device`` (a factory)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` in eval mode (channels_last on CUDA)."""
    base = unwrap_model(model)
    base.eval().to(device)
    if device.type == "cuda":
        base.to(memory_format=torch.channels_last)
    return base


# ------------------------------------------------------------------ streaming

class StreamingPredictor:
    """Predict one sequence chunk by chunk, carrying the recurrent state.

    ``predictor(frames)`` takes the next frames of the sequence (uint8
    (n, H, W, 3) array or tensor) and returns their predictions, a float32
    (n, outputs) array; an audio or audiovisual model is also given their
    audio windows, ``predictor(frames, audio)`` (float32 (n, samples); the
    frames are ignored by an audio model). :meth:`reset` starts a new
    sequence. Used by :mod:`end2you_visual.predict` (frames straight from
    the face pipeline).
    """

    def __init__(self, model: torch.nn.Module, device: Union[str, torch.device] = "auto",
                 precision: str = "auto", activate: bool = True) -> None:
        self.device = resolve_device(device)
        self.model = model
        self.base: Any = prepare_model(model, self.device)  # a VisualModel, AudioModel...
        self.autocast = autocast_for(self.device, precision)
        self.activate = activate
        self.inputs = model_inputs(self.base)
        self.state: Optional[_State] = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, frames: Union[np.ndarray, torch.Tensor],
                 audio: Union[np.ndarray, torch.Tensor, None] = None) -> np.ndarray:
        if "audio" in self.inputs and audio is None:
            raise ValueError("this model takes audio too: predictor(frames, audio)")
        given = {"frames": frames, "audio": audio}
        xs = [torch.as_tensor(np.ascontiguousarray(given[k]) if isinstance(given[k], np.ndarray)
                              else given[k]) for k in self.inputs]
        if len(xs[0]) == 0:
            return np.zeros((0, self.base.config["outputs"]), np.float32)
        with torch.inference_mode(), self.autocast():
            out, self.state = self.model(*(x[None].to(self.device) for x in xs), self.state,
                                         return_state=True)
            out = out.float()
            if self.activate:
                out = self.base.activate(out)
        return out[0].cpu().numpy()


# ---------------------------------------------------------------- scheduling

@dataclass(frozen=True)
class _Item:
    """One lane's rows in one step: sequence ``seq``, frames ``start:stop``."""

    lane: int
    seq: int
    start: int
    stop: int


def plan_steps(lengths: Sequence[int], lanes: int,
               window: Optional[int]) -> List[List[_Item]]:
    """The forward passes needed for sequences of ``lengths``.

    Each step is a list of :class:`_Item` (at most one per lane). Lanes take
    sequences longest first; a lane's consecutive items of a sequence carry
    the state, a new sequence starts from zeros (``start == 0``).
    """
    order = deque(sorted((q for q, n in enumerate(lengths) if n > 0),
                         key=lambda q: (-lengths[q], q)))
    at: List[Optional[Tuple[int, int]]] = [None] * max(1, int(lanes))
    steps: List[List[_Item]] = []
    while True:
        items = []
        for lane in range(len(at)):
            if at[lane] is None and order:
                at[lane] = (order.popleft(), 0)
            current = at[lane]
            if current is None:
                continue
            q, start = current
            stop = lengths[q] if window is None else min(start + int(window), lengths[q])
            items.append(_Item(lane, q, start, stop))
            at[lane] = (q, stop) if stop < lengths[q] else None
        if not items:
            return steps
        steps.append(items)


class _Buffers:
    """A ring of flat uint8 host buffers (pinned on CUDA), reused step after step."""

    def __init__(self, count: int, nbytes: int, pin: bool) -> None:
        self.free: queue.Queue[Tuple[torch.Tensor, Optional[torch.cuda.Event]]] = queue.Queue()
        for _ in range(count):
            self.free.put((torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin), None))

    def take(self) -> torch.Tensor:
        buf, event = self.free.get()
        if event is not None:
            event.synchronize()  # its last copy to the device has finished
        return buf

    def give(self, buf: torch.Tensor, event: Optional[torch.cuda.Event] = None) -> None:
        self.free.put((buf, event))


def _fill(buf: torch.Tensor, items: Sequence[_Item], t: int, frame_shape: Tuple[int, ...],
          sequences: Sequence[Tuple[SequenceFile, SequenceInfo]],
          readers: Dict[int, FrameReader]) -> torch.Tensor:
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


def _gather_state(lane_state: Dict[int, Tuple[torch.Tensor, ...]], items: Sequence[_Item],
                  rows: int, is_tuple: bool) -> Optional[_State]:
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


def _scatter_state(lane_state: Dict[int, Tuple[torch.Tensor, ...]], items: Sequence[_Item],
                   state: _State, lengths: Sequence[int]) -> None:
    parts = state if isinstance(state, tuple) else (state,)
    for i, it in enumerate(items):
        if it.stop < lengths[it.seq]:
            lane_state[it.lane] = tuple(p[:, i:i + 1] for p in parts)
        else:
            lane_state.pop(it.lane, None)


def _check_options(window: Any, lanes: Any = 1, precision: str = "auto", prefetch: Any = 1,
                   workers: Any = None) -> Tuple[Optional[int], int, int, Optional[int]]:
    """The prediction options checked as the CLI checks them (InputError
    naming the option); ``window`` 0 or None: whole sequences (None)."""
    window = check_window(window)
    lanes = int(COUNT.check("--lanes", lanes))
    check_choice("--precision", precision, PRECISIONS)
    prefetch = int(COUNT.check("prefetch", prefetch))
    if workers is not None:
        workers = int(COUNT.check("workers", workers))
    return window, lanes, prefetch, workers


def predict_sequences(model: torch.nn.Module,
                      sequences: Sequence[Tuple[SequenceFile, SequenceInfo]],
                      window: Optional[int] = 150, lanes: int = 8,
                      device: Union[str, torch.device] = "auto", precision: str = "auto",
                      activate: bool = True, workers: Optional[int] = None, prefetch: int = 3,
                      static_shapes: bool = False,
                      progress: Optional[Callable[[int], object]] = None) -> List[np.ndarray]:
    """Predict many sequences of HDF5 files, ``lanes`` of them side by side.

    Args:
        model: a :class:`~end2you_visual.models.VisualModel` (or its
            ``torch.compile`` wrapper), or an audio / audiovisual model
            (:mod:`end2you_visual.models.build`), which are also given each
            frame's audio window; it is moved to ``device`` (channels_last
            on CUDA) and used in eval mode (its train/eval mode is restored).
        sequences: list of ``(SequenceFile, SequenceInfo)``; all files must
            have the same frame size (and hold audio, for a model that takes it).
        window: frames per forward pass of a sequence (state carried between
            windows); ``None`` or 0 (the CLI's ``--window 0``): each sequence
            in one pass (memory then grows with the longest sequence: 3 x
            lanes x its frames on the host).
        lanes: sequences per forward pass, side by side (``batch_size``,
            elsewhere, always counts frames).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU),
            ``"bf16"`` or ``"fp32"``.
        activate: apply ``model.activate`` (probabilities for classification
            heads); False: raw outputs.
        workers: reader threads (default ``min(4, cpus)``).
        prefetch: steps read ahead of the computation.
        static_shapes: pad every step to ``(lanes, window)`` frames (for
            ``torch.compile`` / CUDA graphs: one input shape).
        progress: optional callable ``progress(frames)``, called with the
            number of frames finished after each step (e.g. ``tqdm.update``).

    Returns:
        One float32 array (length, outputs) per sequence, in order.
    """
    window, lanes, prefetch, workers = _check_options(window, lanes, precision, prefetch,
                                                      workers)
    device = resolve_device(device)
    base: Any = prepare_model(model, device)
    results = [np.zeros((info.length, base.config["outputs"]), np.float32)
               for _, info in sequences]
    lengths = [info.length for _, info in sequences]
    if not any(lengths):
        return results
    sizes = {f.frame_size for f, _ in sequences}
    if len(sizes) != 1:
        raise ValueError(f"sequences of several frame sizes {sorted(sizes)}: predict each "
                         "size separately")
    inputs = model_inputs(base)
    samples = audio_window(sequences) if "audio" in inputs else None
    lanes = min(int(lanes), sum(1 for n in lengths if n > 0))
    steps = plan_steps(lengths, lanes, window)
    t_max = max(it.stop - it.start for step in steps for it in step)
    if static_shapes and window is not None:
        t_max = int(window)
    prefetch = max(1, int(prefetch)) if window is not None else 1  # whole sequences: big
    runner = _Runner(model, base, device, precision, activate, lengths, lanes,
                     lanes if static_shapes else None)
    reader = _StepReader(sequences, (sizes.pop(),) * 2 + (3,), lanes, t_max, static_shapes,
                         prefetch, workers or min(4, os.cpu_count() or 1), device.type == "cuda",
                         frames="frames" in inputs, audio_samples=samples)
    was_training = base.training
    try:
        with torch.inference_mode():
            last: Optional[Tuple[List[_Item], Union[np.ndarray, torch.Tensor],
                                 Optional[torch.cuda.Event]]] = None
            for step, buf, host in reader.iterate(steps):
                current = (step,) + runner.forward(step, buf, host, reader.buffers)
                if last is not None:
                    _finish(results, last, progress)
                last = current
            assert last is not None  # there is a step: a sequence has frames
            _finish(results, last, progress)
    finally:
        reader.close()
        base.train(was_training)
    return results


class _StepReader:
    """Reads steps' frames ahead of the computation, in a pool of threads."""

    def __init__(self, sequences: Sequence[Tuple[SequenceFile, SequenceInfo]],
                 frame_shape: Tuple[int, ...], lanes: int, t_max: int, static_shapes: bool,
                 prefetch: int, workers: int, pin: bool, frames: bool = True,
                 audio_samples: Optional[int] = None) -> None:
        self.sequences, self.frame_shape = sequences, frame_shape
        self.frames, self.audio_samples = frames, audio_samples
        self.t_max, self.static_shapes, self.prefetch = t_max, static_shapes, prefetch
        self.readers = {id(f): FrameReader(f) for f in {id(f): f for f, _ in sequences}.values()}
        self.buffers = _Buffers(prefetch + 2, lanes * t_max * math.prod(frame_shape), pin)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="e2y-read")
        self.pending: Deque[Future[Tuple[torch.Tensor, _HostInputs]]] = deque()

    def _load(self, step: List[_Item]) -> Tuple[torch.Tensor, _HostInputs]:
        t = self.t_max if self.static_shapes else max(it.stop - it.start for it in step)
        buf = self.buffers.take()
        try:
            frames = (_fill(buf, step, t, self.frame_shape, self.sequences, self.readers)
                      if self.frames else None)
            audio = (read_step_audio(self.sequences, step, t, self.audio_samples)
                     if self.audio_samples is not None else None)
            return buf, (frames, audio)
        except BaseException:
            self.buffers.give(buf)
            raise

    def iterate(self, steps: List[List[_Item]]
                ) -> Iterator[Tuple[List[_Item], torch.Tensor, _HostInputs]]:
        """Yield ``(step, buffer, (frames, audio))`` (None for what the model
        does not take); the caller gives the buffer back."""
        for k in range(min(self.prefetch, len(steps))):
            self.pending.append(self.pool.submit(self._load, steps[k]))
        for k, step in enumerate(steps):
            buf, host = self.pending.popleft().result()
            if k + self.prefetch < len(steps):
                self.pending.append(self.pool.submit(self._load, steps[k + self.prefetch]))
            yield step, buf, host

    def close(self) -> None:
        for fut in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True)
        for reader in self.readers.values():
            reader.close()


class _Runner:
    """Forward passes of steps, each lane's recurrent state carried to its next window."""

    def __init__(self, model: torch.nn.Module, base: Any, device: torch.device, precision: str,
                 activate: bool, lengths: Sequence[int], lanes: int,
                 pad_rows: Optional[int]) -> None:
        self.model, self.base, self.device = model, base, device
        self.autocast = autocast_for(device, precision)
        self.activate, self.lengths, self.pad_rows = activate, lengths, pad_rows
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.lane_state: Dict[int, Tuple[torch.Tensor, ...]] = {}
        self.is_tuple = False

    def forward(self, step: List[_Item], buf: torch.Tensor, host: _HostInputs,
                buffers: _Buffers) -> _HostOutputs:
        """Start one step; returns ``(outputs on the host, event to wait for)``."""
        rows = self.pad_rows or len(step)
        frames, audio = (_pad_rows(h, rows) for h in host)  # static shapes: idle lanes zero
        inputs = []
        if frames is not None:
            x, release = _to_device(frames, self.device, self.copy_stream, buffers, buf)
            inputs.append(x)
        else:
            buffers.give(buf)
            release = _nothing
        if audio is not None:
            inputs.append(audio.to(self.device, non_blocking=True))
        state = _gather_state(self.lane_state, step, rows, self.is_tuple)
        with self.autocast():
            out, new_state = self.model(*inputs, state, return_state=True)
        out = out.float()
        del inputs
        release()
        if self.activate:
            out = self.base.activate(out)
        if new_state is not None:
            self.is_tuple = isinstance(new_state, tuple)
            _scatter_state(self.lane_state, step, new_state, self.lengths)
        return _to_host(out, self.copy_stream is not None)


def _nothing() -> None:
    pass


def _pad_rows(host: Optional[torch.Tensor], rows: int) -> Optional[torch.Tensor]:
    """``host`` (n, ...) with zero rows added up to ``rows`` (None stays None)."""
    if host is None or rows <= len(host):
        return host
    padded = torch.zeros((rows,) + tuple(host.shape[1:]), dtype=host.dtype)
    padded[:len(host)] = host
    return padded


def _to_device(host: torch.Tensor, device: torch.device,
               copy_stream: Optional[torch.cuda.Stream], buffers: _Buffers,
               buf: torch.Tensor) -> Tuple[torch.Tensor, Callable[[], None]]:
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


def _to_host(out: torch.Tensor, cuda: bool) -> _HostOutputs:
    """Start copying ``out`` to the host; ``_store`` waits for it."""
    if not cuda:
        return out.cpu().numpy(), None
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _finish(results: List[np.ndarray],
            last: Tuple[List[_Item], Union[np.ndarray, torch.Tensor], Optional[torch.cuda.Event]],
            progress: Optional[Callable[[int], object]]) -> None:
    """Wait for a step's outputs and put them in place."""
    n = _store(results, *last)
    if progress is not None:
        progress(n)


def _store(results: List[np.ndarray], step: Sequence[_Item],
           out_host: Union[np.ndarray, torch.Tensor], event: Optional[torch.cuda.Event]) -> int:
    if event is not None:
        event.synchronize()
    out = out_host.numpy() if isinstance(out_host, torch.Tensor) else out_host
    n = 0
    for i, it in enumerate(step):
        results[it.seq][it.start:it.stop] = out[i, :it.stop - it.start]
        n += it.stop - it.start
    return n


# ------------------------------------------------------------ one sequence

def _as_sequence(source: Any, end2you_fps: Optional[float] = None
                 ) -> Optional[Tuple[SequenceFile, SequenceInfo]]:
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


def predict_sequence(model: torch.nn.Module, frames_source: Any,
                     window: Optional[int] = None, device: Union[str, torch.device] = "auto",
                     precision: str = "auto", activate: bool = True,
                     end2you_fps: Optional[float] = None) -> np.ndarray:
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
            window to window, so the result equals one pass (``None`` or 0,
            the default).
        device, precision, activate: see :func:`predict_sequences`.

    Returns:
        float32 array (T, outputs).
    """
    window = _check_options(window, precision=precision)[0]
    seq = _as_sequence(frames_source, end2you_fps)
    if seq is not None:
        return predict_sequences(model, [seq], window=window, lanes=1, device=device,
                                 precision=precision, activate=activate)[0]
    predictor = StreamingPredictor(model, device, precision, activate)
    if isinstance(frames_source, (np.ndarray, torch.Tensor)):
        step = max(len(frames_source), 1) if window is None else window
        chunks: Iterable[Any] = (frames_source[i:i + step]
                                 for i in range(0, len(frames_source), step))
    else:
        chunks = frames_source
    outs = [predictor(chunk) for chunk in chunks]
    outs = [o for o in outs if len(o)]
    if not outs:
        return np.zeros((0, predictor.base.config["outputs"]), np.float32)
    return np.concatenate(outs)


# ------------------------------------------------------------------ models

def load_model(model: Union[str, "os.PathLike[str]", torch.nn.Module],
               device: Union[str, torch.device]) -> torch.nn.Module:
    """``model`` itself, or the model a registered name / checkpoint path
    names, loaded onto ``device``
    (:func:`~end2you_visual.zoo.resolve_model`'s ``model``)."""
    from .zoo import resolve_model

    return resolve_model(model, device).model


def model_title(model: Union[str, "os.PathLike[str]", torch.nn.Module]) -> str:
    """How plots name ``model`` (:func:`~end2you_visual.zoo.model_title`)."""
    from .zoo import model_title as title

    return title(model)
