"""Shared test fixtures."""
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


def _write_continuous(path, lengths, subjects=None, splits=None, seed=0):
    """Sequences ``s0``... of 16x16 frames at 25 fps whose arousal follows the
    frames' brightness (learnable), valence = 1 - arousal; ``subjects`` and
    ``splits`` (one per sequence) as metadata. Returns ``path``."""
    rng = np.random.default_rng(seed)
    with SequenceWriter(path, CONTINUOUS_SIZE, ["arousal", "valence"], "continuous") as w:
        for q, n in enumerate(lengths):
            meta = {}
            if subjects:
                meta["subject"] = subjects[q]
            if splits:
                meta["split"] = splits[q]
            w.begin_sequence(f"s{q}", fps=25.0, metadata=meta)
            level = rng.uniform(0, 1, n)
            noise = rng.integers(0, 60, (n, CONTINUOUS_SIZE, CONTINUOUS_SIZE, 3))
            frames = (noise + level[:, None, None, None] * 190).astype(np.uint8)
            w.append(frames, np.arange(n) / 25, np.stack([level, 1 - level], 1))
            w.end_sequence()
        w.commit()
    return path


@pytest.fixture(scope="session")
def write_continuous():
    """The factory ``write_continuous(path, lengths, subjects=None, splits=None,
    seed=0)`` of small learnable arousal/valence HDF5 files (see
    ``_write_continuous``)."""
    return _write_continuous
