"""Shared test fixtures."""
import subprocess

import numpy as np
import pytest
import torch

from end2you_visual.hdf5 import SequenceWriter

CONTINUOUS_SIZE = 16


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models gain nothing from intra-op
    threads, and on a busy 2-core machine competing OpenMP threads make each
    step 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_per_module():
    """``one_thread`` for a whole module (``pytestmark =
    pytest.mark.usefixtures("one_thread_per_module")``): MTCNN's many small
    convolutions gain nothing from a second thread, and on a busy machine
    OpenMP threads spinning for each other make it up to ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_zoo_home(tmp_path_factory, monkeypatch):
    """Every test sees an empty zoo home folder of its own, never the user's
    ``~/.cache/end2you-visual`` (whose registry could add or shadow names)."""
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path_factory.mktemp("zoo_home")))


def _write_sequences(path, lengths, rows, *, names, kind, size, seed=0, name="s{}".format,
                     source=None, metadata=None, face_found=None, audio=None, fps=25.0,
                     **writer_kwargs):
    """Write ``len(lengths)`` sequences at ``fps`` to the HDF5 file ``path``;
    returns ``path``.

    One ``rng = np.random.default_rng(seed)`` serves the whole file, drawn for
    sequence ``q`` of ``n = lengths[q]`` frames by ``rows(q, n, rng)``, which
    returns ``(frames, labels)`` (uint8 (n, size, size, 3), and (n, L) or
    None), then by ``audio(q, n, rng)``, which returns its float32 samples
    (give ``audio_rate`` too). ``name(q)``, ``source(q)`` and ``metadata(q)``
    (a dict) describe the sequence, ``face_found(n)`` flags its frames (all
    found without it); ``writer_kwargs`` go to ``SequenceWriter``."""
    rng = np.random.default_rng(seed)
    with SequenceWriter(path, size, names, kind, **writer_kwargs) as w:
        for q, n in enumerate(lengths):
            w.begin_sequence(name(q), source=source(q) if source else "", fps=fps,
                             metadata=metadata(q) if metadata else None)
            frames, labels = rows(q, n, rng)
            w.append(frames, np.arange(n) / fps, labels,
                     face_found=face_found(n) if face_found else None)
            if audio:
                w.append_audio(audio(q, n, rng))
            w.end_sequence()
        w.commit()
    return path


@pytest.fixture(scope="session")
def write_sequences():
    """The factory ``write_sequences(path, lengths, rows, *, names, kind, size,
    seed=0, name=..., source=None, metadata=None, face_found=None, audio=None,
    fps=25.0, **writer_kwargs)`` of small HDF5 files (see ``_write_sequences``)."""
    return _write_sequences


def _write_continuous(path, lengths, subjects=None, splits=None, seed=0):
    """Sequences ``s0``... of 16x16 frames at 25 fps whose arousal follows the
    frames' brightness (learnable), valence = 1 - arousal; ``subjects`` and
    ``splits`` (one per sequence) as metadata. Returns ``path``."""
    def rows(q, n, rng):
        level = rng.uniform(0, 1, n)
        noise = rng.integers(0, 60, (n, CONTINUOUS_SIZE, CONTINUOUS_SIZE, 3))
        frames = (noise + level[:, None, None, None] * 190).astype(np.uint8)
        return frames, np.stack([level, 1 - level], 1)

    def metadata(q):
        meta = {}
        if subjects:
            meta["subject"] = subjects[q]
        if splits:
            meta["split"] = splits[q]
        return meta

    return _write_sequences(path, lengths, rows, names=["arousal", "valence"],
                            kind="continuous", size=CONTINUOUS_SIZE, seed=seed,
                            metadata=metadata)


@pytest.fixture(scope="session")
def write_continuous():
    """The factory ``write_continuous(path, lengths, subjects=None, splits=None,
    seed=0)`` of small learnable arousal/valence HDF5 files (see
    ``_write_continuous``)."""
    return _write_continuous


@pytest.fixture
def continuous_dir(tmp_path, write_continuous):
    """Two small files of continuous labels: five sequences of five subjects."""
    folder = tmp_path / "cont"
    write_continuous(folder / "a.h5", [20, 17, 30], subjects=["p1", "p2", "p3"])
    write_continuous(folder / "b.h5", [25, 12], subjects=["p4", "p5"], seed=1)
    return folder


def _kill_after_epochs(monkeypatch, n_epochs):
    """Make training raise KeyboardInterrupt (a simulated kill) at the first
    step after ``n_epochs`` checkpoints were saved (``monkeypatch`` undoes it)."""
    from end2you_visual.training import Trainer

    saves = {"n": 0}
    real_save, real_step = Trainer._save, Trainer.train_step

    def save(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        saves["n"] += 1

    def step(self, batch):
        if saves["n"] >= n_epochs:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "_save", save)
    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.fixture(scope="session")
def kill_after_epochs():
    """``kill_after_epochs(monkeypatch, n)``: training is killed after ``n``
    saved epochs (see ``_kill_after_epochs``)."""
    return _kill_after_epochs


@pytest.fixture
def resume_after_kill(tmp_path, monkeypatch):
    """``resume_after_kill(keys, **settings)``: train 3 epochs in one run
    (``tmp_path/full``) and in a run killed after epoch 2 then resumed
    (``tmp_path/killed``); asserts that the two end with identical weights
    and identical history ``keys``; returns ``(full, resumed, state_dict)``."""
    from end2you_visual.models import read_checkpoint
    from end2you_visual.training import train

    def run(keys, **settings):
        settings = {"epochs": 3, **settings}
        full = train(out_dir=str(tmp_path / "full"), **settings)
        with monkeypatch.context() as m:
            _kill_after_epochs(m, 2)
            with pytest.raises(KeyboardInterrupt):
                train(out_dir=str(tmp_path / "killed"), **settings)
        killed = read_checkpoint(tmp_path / "killed" / "last.pt")
        assert killed["training"]["epoch"] == 2
        resumed = train(out_dir=str(tmp_path / "killed"), resume=True, **settings)
        a = read_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
        b = read_checkpoint(tmp_path / "killed" / "last.pt")["state_dict"]
        assert a.keys() == b.keys()
        for name, value in a.items():
            assert torch.equal(value, b[name]), name
        assert [[r[k] for k in keys] for r in full.history] == \
            [[r[k] for k in keys] for r in resumed.history]
        assert resumed.epochs_run == settings["epochs"]
        return full, resumed, a

    return run


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kilobytes, full=False, folders=())``: a folder on a tmpfs
    of that size (a disk that fills up for real), with the sub-folders
    ``folders`` made, then filled to its last byte when ``full``; unmounted
    after the test. Root only: the test is skipped where
    a tmpfs cannot be mounted."""
    mounts = []

    def make(kilobytes, full=False, folders=()):
        mount = tmp_path / f"disk{len(mounts)}"
        mount.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs",
                               str(mount)], capture_output=True)
        if made.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here: " + made.stderr.decode()[-200:])
        mounts.append(mount)
        for folder in folders:
            (mount / folder).mkdir()
        if full:
            with open(mount / "fill", "wb", buffering=0) as fill:
                with pytest.raises(OSError):
                    while True:
                        fill.write(b"\0" * 4096)
        return mount

    yield make
    for mount in mounts:
        subprocess.run(["umount", str(mount)], check=False)


# ------------------------------------------------- videos made in the tests
def _ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
                    *map(str, args)], check=True)


def _side_by_side(left, right, out, crops=(0, 0), frames=120, swap=60):
    """``left`` and ``right`` (320 x 360 each, cut at x = ``crops``) side by
    side at 25 fps; after frame ``swap`` a cut, and they change sides."""
    a, b = crops
    _ffmpeg("-i", left, "-i", right, "-filter_complex",
            f"[0:v]fps=25,scale=-2:360,crop=320:360:{a}:0,trim=end_frame={frames},"
            "setpts=PTS-STARTPTS,split[a1][a2];"
            f"[1:v]fps=25,scale=-2:360,crop=320:360:{b}:0,trim=end_frame={frames},"
            "setpts=PTS-STARTPTS,split[b1][b2];"
            f"[a1]trim=end_frame={swap}[l1];[b1]trim=end_frame={swap}[r1];"
            f"[a2]trim=start_frame={swap},setpts=PTS-STARTPTS[r2];"
            f"[b2]trim=start_frame={swap},setpts=PTS-STARTPTS[l2];"
            "[l1][r1]hstack[s1];[l2][r2]hstack[s2];[s1][s2]concat=n=2:v=1[out]",
            "-map", "[out]", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", out)
    return out


@pytest.fixture(scope="session")
def ffmpeg():
    """``ffmpeg(*args)``: run ffmpeg (moviepy's, via imageio-ffmpeg) quietly,
    overwriting outputs; fails the test when ffmpeg does."""
    return _ffmpeg


@pytest.fixture(scope="session")
def side_by_side():
    """``side_by_side(left, right, out, crops=(0, 0), frames=120, swap=60)``:
    two clips side by side in one 640 x 360 video, swapping sides at a cut
    (see ``_side_by_side``); returns ``out``."""
    return _side_by_side
