"""`extract`: per-frame embeddings aligned with the frames, in HDF5, npy and CSV."""
import csv
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.data import SequenceFile
from end2you_visual.errors import InputError
from end2you_visual.extract import extract_features, model_checksum
from end2you_visual.models import build_model, save_checkpoint

LENGTHS = (9, 5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, write_sequences):
    """Two labelled sequences of 32 px crops; a few frames without a face."""
    def rows(q, n, rng):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.random((n, 2))

    def found(n):
        flags = np.ones(n, bool)
        flags[[1, n - 1]] = False
        return flags

    return write_sequences(tmp_path_factory.mktemp("data") / "clips.h5", LENGTHS, rows,
                           names=["arousal", "valence"], kind="continuous", size=32,
                           name="clip{}".format, face_found=found)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet_tiny", outputs=2, hidden_size=8, input_size=32).eval()


def _reference(path, model):
    """model.features on each sequence's frames, NaN where no face."""
    f = SequenceFile(path)
    rows = []
    for info in f.sequences:
        clip = f.read(info)
        with torch.no_grad():
            feats = model.features(torch.from_numpy(clip.frames)[None])[0].numpy()
        feats[~clip.face_found] = np.nan
        rows.append(feats)
    return np.concatenate(rows)


def test_hdf5_features_equal_model_features(dataset, model, tmp_path):
    (result,) = extract_features([dataset], model, tmp_path, dtype="float32", batch_size=4,
                                 device="cpu")
    assert Path(result.output) == tmp_path / "clips.features.h5"
    assert (result.frames, result.faces_found, result.features) == (14, 10, 64)
    reference = _reference(dataset, model)
    source = SequenceFile(dataset)
    with h5py.File(result.output) as h5:
        features = h5["features"][:]
        assert features.dtype == np.float32 and features.shape == (14, 64)
        np.testing.assert_allclose(features, reference, rtol=0, atol=1e-6)
        found = h5["face_found"][:]
        assert found.tolist() == [i not in (1, 8, 10, 13) for i in range(14)]
        assert np.isnan(features[~found]).all() and np.isfinite(features[found]).all()
        everything = source.read(0)
        np.testing.assert_array_equal(h5["labels"][:9], everything.labels)
        np.testing.assert_array_equal(h5["timestamps"][:9], everything.timestamps)
        assert h5["sequences/offsets"][:].tolist() == [0, 9, 14]
        assert [n.decode() for n in h5["sequences/name"][:]] == ["clip0", "clip1"]
        attrs = dict(h5.attrs)
        assert attrs["format"] == "end2you-visual-features"
        assert attrs["model_checksum"] == model_checksum(model)[1]
        assert attrs["model_checksum_of"] == "state_dict"
        assert json.loads(attrs["label_names"]) == ["arousal", "valence"]
        assert json.loads(attrs["model_config"])["arch"] == "resnet_tiny"
    assert not list(tmp_path.glob(".*tmp"))


def test_npy_and_csv_and_float16(dataset, model, tmp_path):
    reference = _reference(dataset, model)
    (npy,) = extract_features(dataset, model, tmp_path, fmt="npy", batch_size=3, device="cpu")
    array = np.load(npy.output)
    assert array.dtype == np.float16 and array.shape == (14, 64)
    np.testing.assert_array_equal(array, reference.astype(np.float16))
    (table,) = extract_features(dataset, model, tmp_path, fmt="csv", dtype="float32",
                                device="cpu")
    with open(table.output, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:6] == ["sequence", "timestamp", "face_found", "arousal", "valence", "f0"]
    assert len(rows) == 15 and len(rows[0]) == 5 + 64
    assert rows[2][:3] == ["clip0", "0.040000", "0"] and rows[2][5:] == [""] * 64
    np.testing.assert_allclose(np.array(rows[1][5:], float), reference[0], atol=1e-6)
    assert rows[10][0] == "clip1"


def test_existing_output_is_refused_unless_overwrite(dataset, model, tmp_path):
    (first,) = extract_features(dataset, model, tmp_path, device="cpu")
    Path(first.output).write_bytes(b"keep me")
    with pytest.raises(InputError, match="exists.*--overwrite"):
        extract_features(dataset, model, tmp_path, device="cpu")
    assert Path(first.output).read_bytes() == b"keep me"
    extract_features(dataset, model, tmp_path, device="cpu", overwrite=True)
    assert h5py.is_hdf5(first.output)


def test_checkpoint_model_and_cli(dataset, model, tmp_path):
    ckpt = save_checkpoint(model, tmp_path / "m.pt")
    result = CliRunner().invoke(cli, ["extract", str(dataset), "--model", str(ckpt), "--out",
                                      str(tmp_path / "out"), "--device", "cpu",
                                      "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    assert "14 frames (10 with a face) x 64 features" in result.output
    from end2you_visual.zoo import sha256_file

    with h5py.File(tmp_path / "out" / "clips.features.h5") as h5:
        assert h5.attrs["model_checksum"] == sha256_file(ckpt)
        assert h5.attrs["model_name"] == str(ckpt)
        assert h5["features"].dtype == np.float16
    again = CliRunner().invoke(cli, ["extract", str(dataset), "--model", str(ckpt), "--out",
                                     str(tmp_path / "out")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = CliRunner().invoke(cli, ["extract", str(dataset), "--model", str(ckpt), "--out",
                                   str(tmp_path / "o2"), "--batch-size", "0"])
    assert bad.exit_code == 2


def test_audio_model_is_refused(dataset, tmp_path):
    audio = build_model(modality="audio", audio_channels=(4, 8), hidden_size=8)
    with pytest.raises(InputError, match="visual or audiovisual model"):
        extract_features(dataset, audio, tmp_path, device="cpu")


def test_videos_go_through_the_face_pipeline(model, tmp_path, monkeypatch):
    from end2you_visual.faces import FaceBatch, FacePipeline

    class EveryOtherFace:  # stands in for MTCNN: a grey crop, a face on even frames
        def process(self, frames):
            n = len(frames)
            crops = frames[:, :32, :32].copy()
            return FaceBatch(crops=crops, boxes=np.zeros((n, 4), np.float32),
                             found=np.arange(n) % 2 == 0, probs=np.ones(n, np.float32))

    monkeypatch.setattr(FacePipeline, "from_settings", lambda settings, fps=None, size=None,
                        device=None, faces=None: EveryOtherFace())
    video = Path(__file__).parent / "data" / "single_face.mp4"
    (result,) = extract_features([video], model, tmp_path, dtype="float32", batch_size=24,
                                 device="cpu")
    from end2you_visual.video import iter_frame_batches

    frames = np.concatenate([b for _, b in iter_frame_batches(str(video), 72)])[:, :32, :32]
    with torch.no_grad():
        reference = model.features(torch.from_numpy(frames)[None])[0].numpy()
    with h5py.File(result.output) as h5:
        features, found = h5["features"][:], h5["face_found"][:]
        assert features.shape == (72, 64) and found.tolist() == [i % 2 == 0 for i in range(72)]
        np.testing.assert_allclose(features[found], reference[found], rtol=0, atol=1e-6)
        assert np.isnan(features[~found]).all()
        np.testing.assert_allclose(h5["timestamps"][:3], [0, 1 / 30, 2 / 30])
        assert "labels" not in h5


def test_videos_are_cropped_with_the_models_framing_unless_a_margin_is_given(tmp_path,
                                                                            monkeypatch):
    from end2you_visual.faces import FaceBatch, FacePipeline
    from end2you_visual.framing import Framing

    margins = []

    def pipeline(settings, fps=None, size=None, device=None, faces=None):
        margins.append(settings.margin)

        class Faces:  # stands in for MTCNN: a corner of each frame, a face in each
            def process(self, frames):
                n = len(frames)
                return FaceBatch(crops=frames[:, :32, :32].copy(),
                                 boxes=np.zeros((n, 4), np.float32), found=np.ones(n, bool),
                                 probs=np.ones(n, np.float32))
        return Faces()

    monkeypatch.setattr(FacePipeline, "from_settings", pipeline)
    torch.manual_seed(0)
    framed = build_model("resnet_tiny", outputs=2, hidden_size=8, input_size=32)
    framed.framing = Framing(margin=0.0, size=32, source="whole-image")
    ckpt = save_checkpoint(framed, tmp_path / "framed.pt")
    old = save_checkpoint(build_model("resnet_tiny", outputs=2, hidden_size=8, input_size=32),
                          tmp_path / "old.pt")
    video = Path(__file__).parent / "data" / "single_face.mp4"
    lines = []
    (by_framing,) = extract_features([video], ckpt, tmp_path / "a", batch_size=72,
                                     device="cpu", announce=lines.append)
    (given,) = extract_features([video], ckpt, tmp_path / "b", batch_size=72, device="cpu",
                                margin=0.4, announce=lines.append)
    (default,) = extract_features([video], old, tmp_path / "c", batch_size=72, device="cpu",
                                  announce=lines.append)
    assert margins == [0.0, 0.4, 0.2]
    assert [r.face_settings["margin"] for r in (by_framing, given, default)] == [0.0, 0.4, 0.2]
    with h5py.File(by_framing.output) as h5:
        stored = json.loads(h5.attrs["face_settings"])
    assert stored == {**by_framing.face_settings, "size": 32, "device": "cpu", "margin": 0.0}
    assert lines == [
        "using the model's framing: margin 0.0 (whole face images packed with generate "
        "--skip-detection, taken as tight faces); --margin (margin=) overrides",
        "margin 0.4 as given; the model's framing is margin 0.0 (whole face images packed "
        "with generate --skip-detection, taken as tight faces)"]

    # The CLI says it, and --margin wins.
    done = CliRunner().invoke(cli, ["extract", str(video), "--model", str(ckpt), "--out",
                                    str(tmp_path / "d"), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == lines[0]
    done = CliRunner().invoke(cli, ["extract", str(video), "--model", str(ckpt), "--out",
                                    str(tmp_path / "e"), "--device", "cpu", "--margin", "0.4"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == lines[1] and margins[-2:] == [0.0, 0.4]


def test_hdf5_crops_framed_otherwise_than_the_model_are_warned_of(tmp_path, write_sequences):
    from end2you_visual.framing import Framing

    path = write_sequences(tmp_path / "wide.h5", [3], lambda q, n, rng: (
        np.zeros((n, 32, 32, 3), np.uint8), np.zeros((n, 1))), names=["arousal"],
        kind="continuous", size=32, settings={"margin": 0.4})  # as generate --margin 0.4
    torch.manual_seed(0)
    framed = build_model("resnet_tiny", outputs=2, hidden_size=8, input_size=32)
    framed.framing = Framing(margin=0.0, size=32, source="whole-image")
    with pytest.warns(UserWarning) as caught:
        extract_features([path], framed, tmp_path / "out", device="cpu")
    assert [str(w.message) for w in caught] == [
        f"{path}: crops of margin 0.4 (MTCNN face boxes plus the margin); the model's framing "
        "is margin 0.0 (whole face images packed with generate --skip-detection, taken as "
        "tight faces)"]
    framed.framing = Framing(margin=0.4, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract_features([path], framed, tmp_path / "again", device="cpu")


# ------------------------------------------------------- one writer per format (issue 25)

def test_one_writer_per_format_named_in_choices():
    from end2you_visual import extract
    from end2you_visual.choices import EXTRACT_FORMATS, FEATURE_DTYPES
    from end2you_visual.cli.extract import extract as command

    assert tuple(extract.WRITERS) == EXTRACT_FORMATS == ("hdf5", "npy", "csv")
    assert extract.FORMATS == {"hdf5": ".features.h5", "npy": ".features.npy",
                               "csv": ".features.csv"}
    assert extract.DTYPES == FEATURE_DTYPES == ("float16", "float32")
    options = {p.name: p for p in command.params}
    assert tuple(options["fmt"].type.choices) == EXTRACT_FORMATS
    assert tuple(options["dtype"].type.choices) == FEATURE_DTYPES


@pytest.mark.parametrize("fmt", ["hdf5", "npy", "csv"])
def test_a_failed_extraction_leaves_nothing_behind(dataset, model, tmp_path, monkeypatch, fmt):
    from end2you_visual import extract

    real, calls = extract._embed, []

    def embed(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(*args)
    monkeypatch.setattr(extract, "_embed", embed)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(dataset, model, out, fmt=fmt, batch_size=4, device="cpu")
    assert list(out.iterdir()) == []  # no output, no temporary or scratch file
    old = out / f"clips{extract.FORMATS[fmt]}"
    old.write_bytes(b"earlier")
    calls.clear()
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(dataset, model, out, fmt=fmt, batch_size=4, device="cpu",
                         overwrite=True)
    assert [p.name for p in out.iterdir()] == [old.name] and old.read_bytes() == b"earlier"
