"""The HDF5 writer and reader: round trip, atomic writes, windows, End2You's format."""
import json

import h5py
import numpy as np
import pytest

from end2you_visual.data import SequenceFile, WindowDataset, open_files
from end2you_visual.errors import InputError
from end2you_visual.hdf5 import SequenceWriter, is_complete


def _frames(n, size=8, offset=0):
    # Frame k is filled with the value (offset + k) % 256: easy to check.
    values = (np.arange(n) + offset) % 256
    return np.broadcast_to(values[:, None, None, None], (n, size, size, 3)).astype(np.uint8)


@pytest.fixture
def write_h5(write_sequences):
    def write(path, lengths, n_labels=2, size=8):
        """Sequences ``seq0``...: frame k of the file is filled with k % 256 and
        labelled ``k + 0.5 i`` in column ``l<i>``."""
        def rows(q, n, rng):
            offset = sum(lengths[:q])
            labels = np.stack([np.arange(n) + offset + 0.5 * i for i in range(n_labels)], 1)
            return _frames(n, size, offset), labels

        return write_sequences(path, lengths, rows, names=[f"l{i}" for i in range(n_labels)],
                               kind="continuous", size=size, settings={"size": size},
                               name="seq{}".format, source="v{}.mp4".format,
                               metadata=lambda q: {"split": "train"},
                               face_found=lambda n: np.arange(n) % 3 != 0)
    return write


def test_round_trip(tmp_path, write_h5):
    path = tmp_path / "a.h5"
    write_h5(path, [5, 3])
    f = SequenceFile(path)
    assert f.format == "end2you-visual"
    assert f.label_names == ["l0", "l1"]
    assert [(s.name, s.start, s.length, s.fps) for s in f.sequences] == [
        ("seq0", 0, 5, 25.0), ("seq1", 5, 3, 25.0)]
    assert f.sequences[1].metadata == {"split": "train"}
    clip = f.read(1, 1, 3)
    assert clip.frames.shape == (2, 8, 8, 3)
    assert clip.frames[:, 0, 0, 0].tolist() == [6, 7]
    assert clip.labels[:, 1].tolist() == [6.5, 7.5]
    assert clip.timestamps.tolist() == [0.04, 0.08]
    assert f.read(1).face_found.tolist() == [False, True, True]
    assert np.isnan(clip.boxes).all()
    assert json.loads(h5py.File(path)["/"].attrs["settings"]) == {"size": 8}


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "b.h5"
    with pytest.raises(RuntimeError):
        with SequenceWriter(path, 8) as w:
            w.begin_sequence("x")
            w.append(_frames(2), [0, 1])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_uncommitted_file_is_not_complete(tmp_path):
    path = tmp_path / "c.h5"
    w = SequenceWriter(path, 8)
    w.begin_sequence("x")
    w.append(_frames(2), [0, 1])
    w.flush()
    w._h5.flush()
    # As a killed process leaves it: only the partial file exists.
    assert not path.exists() and w.partial.exists()
    assert not is_complete(w.partial)
    w.abort()


def test_wrong_frame_shape_is_refused(tmp_path):
    with SequenceWriter(tmp_path / "d.h5", 8) as w:
        w.begin_sequence("x")
        with pytest.raises(ValueError, match="uint8"):
            w.append(np.zeros((2, 9, 9, 3), np.uint8), [0, 1])


def test_windows_cover_every_frame(tmp_path, write_h5):
    write_h5(tmp_path / "a.h5", [10, 3])
    ds = WindowDataset(tmp_path, window=4)
    # seq0: starts 0, 4 and the tail window 6; seq1 (3 < 4): one padded window.
    assert ds.windows == [(0, 0), (0, 4), (0, 6), (1, 0)]
    item = ds[3]
    assert item["frames"].shape == (4, 8, 8, 3)
    assert item["mask"].tolist() == [True, True, True, False]
    assert item["frames"][:, 0, 0, 0].tolist() == [10, 11, 12, 0]
    labels, found = ds.window_labels(1)
    assert labels[:, 0].tolist() == [4, 5, 6, 7]


def test_label_names_must_match(tmp_path, write_h5):
    write_h5(tmp_path / "a.h5", [4], n_labels=2)
    write_h5(tmp_path / "b.h5", [4], n_labels=3)
    with pytest.raises(InputError, match="b.h5"):
        WindowDataset(tmp_path, window=2)


def test_not_hdf5_is_clear(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="bad.h5"):
        open_files(bad)


def test_reads_end2you_files(tmp_path):
    # The layout End2You's visual generator writes: visual (T, n, 3, H, W) float32
    # of 0-255 pixels, labels (T, L), and its attributes.
    steps, per_step, size = 3, 2, 6
    visual = np.zeros((steps, per_step, 3, size, size), np.float32)
    for t in range(steps):
        for k in range(per_step):
            visual[t, k, 0] = 10 * t + k   # red channel marks the frame
            visual[t, k, 2] = 200.0
    labels = np.array([[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]], np.float32)
    path = tmp_path / "e2y.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("visual", data=visual)
        h5.create_dataset("labels", data=labels)
        h5.attrs["label_names"] = ["arousal", "valence"]
        h5.attrs["num_samples"] = per_step
    f = SequenceFile(path, end2you_fps=50)
    assert f.format == "end2you"
    assert f.label_names == ["arousal", "valence"]
    assert f.sequences[0].length == 6
    clip = f.read(0)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (6, size, size, 3)
    assert clip.frames[:, 0, 0, 0].tolist() == [0, 1, 10, 11, 20, 21]
    assert (clip.frames[..., 2] == 200).all()
    np.testing.assert_allclose(clip.labels[:, 1], [-0.1, -0.1, -0.2, -0.2, -0.3, -0.3])
    np.testing.assert_allclose(clip.timestamps, np.arange(6) / 50)
    ds = WindowDataset([f], window=4)
    assert len(ds) == 2
