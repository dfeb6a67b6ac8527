"""`test`: whole-sequence prediction with carried state, run_test's files and metrics."""
import json
import re

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual import testrun
from end2you_visual.data import SequenceFile
from end2you_visual.errors import InputError
from end2you_visual.framereader import FrameReader
from end2you_visual.inference import plan_steps, predict_sequence, predict_sequences
from end2you_visual.metrics import evaluate_categorical, evaluate_continuous, evaluate_multilabel
from end2you_visual.models import build_model, save_checkpoint
from end2you_visual.predictions import load_predictions, read_prediction_csv
from end2you_visual.testrun import run_test

SIZE = 32
AV = ["arousal", "valence"]



pytestmark = pytest.mark.usefixtures("one_thread")

def tiny(temporal="lstm", head="regression", names=AV, seed=0):
    torch.manual_seed(seed)
    return build_model("resnet_tiny", head=head, outputs=len(names), temporal=temporal,
                       hidden_size=8, num_layers=2, label_names=names,
                       input_size=SIZE).eval()


def whole(model, frames):
    """One forward pass over the whole sequence: the reference."""
    with torch.no_grad():
        return model.activate(model(torch.from_numpy(frames)[None]))[0].numpy()


def random_frames(n, seed, size=SIZE):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def write_h5(write_sequences):
    def write(path, lengths, names=AV, kind="continuous", labels=None, seed=0, size=SIZE,
              **writer):
        """A file of sequences ``seq0``...; labels random unless given (a function)."""
        def rows(q, n, rng):
            y = labels(n, rng) if labels else rng.normal(size=(n, len(names)))
            return random_frames(n, seed * 100 + q, size), y if names else None

        return write_sequences(path, lengths, rows, names=names, kind=kind, size=size, seed=seed,
                               name="seq{}".format, source="v{}.mp4".format,
                               face_found=lambda n: np.arange(n) % 4 != 1, **writer)
    return write


def one_hot(n, rng, classes=3):
    return np.eye(classes)[rng.integers(0, classes, n)]


# ------------------------------------------------------------ predict_sequence

@pytest.mark.parametrize("temporal, window", [("lstm", 1), ("lstm", 5), ("lstm", None),
                                              ("gru", 5), ("none", 5)])
def test_windows_with_carried_state_equal_one_pass(temporal, window):
    model = tiny(temporal)
    frames = random_frames(23, 1)
    ref = whole(model, frames)
    got = predict_sequence(model, frames, window=window, device="cpu")
    assert got.shape == (23, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_state_is_really_carried():
    # Resetting the state at every window (End2You) gives other numbers.
    model = tiny()
    frames = random_frames(12, 2)
    reset = np.concatenate([whole(model, frames[i:i + 4]) for i in range(0, 12, 4)])
    assert not np.allclose(reset, predict_sequence(model, frames, window=4), atol=1e-4)


def test_hdf5_sources_and_iterables(tmp_path, write_h5):
    model = tiny()
    path = write_h5(tmp_path / "a.h5", [9, 14])
    frames = SequenceFile(path).read(1).frames
    ref = whole(model, frames)
    for source in [(path, 1), (str(path), "seq1"), (SequenceFile(path), 1),
                   iter([frames[:5], frames[5:6], frames[6:]])]:
        np.testing.assert_allclose(predict_sequence(model, source, window=4), ref,
                                   rtol=1e-5, atol=1e-6)
    # Raw outputs on request: a multiclass head's logits, not probabilities.
    clf = tiny(head="multiclass", names=["a", "b", "c"])
    raw = predict_sequence(clf, (path, 0), window=4, activate=False)
    probs = predict_sequence(clf, (path, 0), window=4)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(raw), -1).numpy(), probs, atol=1e-6)


def test_plan_covers_every_frame_once_and_restarts_state():
    lengths = [5, 0, 9, 2, 4]
    steps = plan_steps(lengths, lanes=2, window=4)
    assert all(len({it.lane for it in step}) == len(step) <= 2 for step in steps)
    seen = {q: [] for q in range(5)}
    for step in steps:
        for it in step:
            seen[it.seq].append((it.start, it.stop))
    # Longest first, consecutive windows, nothing for the empty sequence.
    assert seen == {0: [(0, 4), (4, 5)], 1: [], 2: [(0, 4), (4, 8), (8, 9)],
                    3: [(0, 2)], 4: [(0, 4)]}
    assert [[(it.lane, it.seq) for it in s] for s in steps] == [
        [(0, 2), (1, 0)], [(0, 2), (1, 0)], [(0, 2), (1, 4)], [(0, 3)]]


@pytest.mark.parametrize("batch, window, static", [(1, 4, False), (3, 4, False),
                                                   (8, 5, True), (2, None, False)])
def test_many_sequences_side_by_side_equal_one_pass_each(tmp_path, batch, window, static,
                                                         write_h5):
    model = tiny()
    lengths = [13, 4, 0, 9, 1, 6]
    f = SequenceFile(write_h5(tmp_path / "m.h5", lengths))
    outs = predict_sequences(model, [(f, s) for s in f.sequences], window=window,
                             lanes=batch, device="cpu", workers=2, prefetch=2,
                             static_shapes=static)
    assert [len(o) for o in outs] == lengths
    for info, out in zip(f.sequences, outs):
        if info.length:
            np.testing.assert_allclose(out, whole(model, f.read(info).frames),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_reader_matches_the_hdf5_reader(tmp_path, compression, write_h5):
    path = write_h5(tmp_path / "r.h5", [21, 30], compression=compression, chunk_frames=8)
    f = SequenceFile(path)
    reader = FrameReader(f)
    assert reader.fast == (compression is None)  # direct chunk reads when uncompressed
    for info, (a, b) in [(f.sequences[0], (0, 21)), (f.sequences[1], (3, 27)),
                         (f.sequences[1], (29, 30))]:
        out = np.full((b - a, SIZE, SIZE, 3), 7, np.uint8)
        reader.read_into(info, a, b, out)
        np.testing.assert_array_equal(out, f.read(info, a, b).frames)
    reader.close()


def test_end2you_files_are_predicted(tmp_path):
    path = tmp_path / "e2y.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5["visual"] = rng.random((6, 2, 3, SIZE, SIZE)).astype(np.float32)
        h5["labels"] = rng.normal(size=(6, 2)).astype(np.float32)
    model = tiny(names=["label_0", "label_1"])
    f = SequenceFile(path, end2you_fps=10)
    np.testing.assert_allclose(predict_sequence(model, f, window=5),
                               whole(model, f.read(0).frames), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- run_test

def direct(model, paths):
    """Per-sequence (name, predictions, labels, face_found) computed without run_test."""
    out = []
    for path in paths:
        f = SequenceFile(path)
        for info in f.sequences:
            clip = f.read(info)
            out.append((info.name, whole(model, clip.frames), clip.labels, clip.face_found))
    return out


@pytest.mark.parametrize("include_no_face", [True, False])
def test_run_test_writes_csvs_h5_and_the_same_metrics(tmp_path, include_no_face, write_h5):
    model = tiny()
    paths = [write_h5(tmp_path / "data" / "a.h5", [11, 6], seed=1),
             write_h5(tmp_path / "data" / "b.h5", [8], seed=2)]
    paths[1].rename(tmp_path / "data" / "b.h5")
    out = tmp_path / "out"
    result = run_test(model, [tmp_path / "data"], out, window=4, device="cpu",
                      include_no_face=include_no_face, plot=True, lanes=2)

    # Two files both hold a "seq0": the CSV stems are made unique with the file stem.
    stems = ["a__seq0", "seq1", "b__seq0"]
    assert [p.name for p in result.csv_paths] == [s + ".csv" for s in stems]
    ref = direct(model, paths)
    for path, (_, pred, label, face) in zip(result.csv_paths, ref):
        series = read_prediction_csv(path)
        assert series.names == AV and len(series.time) == len(pred)  # one row per frame
        np.testing.assert_allclose(series.time, np.arange(len(pred)) / 25.0)
        np.testing.assert_allclose(series.values, pred, rtol=1e-5, atol=1e-6)
        assert series.face_found.tolist() == face.tolist()

    masks = [np.ones(len(f), bool) if include_no_face else f for *_, f in ref]
    expected = evaluate_continuous([r[1] for r in ref], [r[2] for r in ref], names=AV,
                                   masks=masks, files=stems).to_dict()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["files"] == stems and metrics["include_no_face"] == include_no_face
    assert metrics["frames"] == sum(int(m.sum()) for m in masks)
    assert metrics["metrics"].keys() == expected.keys()
    for name in AV:
        for key in ("ccc", "pearson", "rmse", "mae", "n_frames"):
            assert metrics["metrics"]["pooled"][name][key] == pytest.approx(
                expected["pooled"][name][key], rel=1e-5, abs=1e-6)
            for stem in stems:
                assert metrics["metrics"]["per_file"][stem][name][key] == pytest.approx(
                    expected["per_file"][stem][name][key], rel=1e-5, abs=1e-6)

    names, seqs = load_predictions(out / "predictions.h5")
    assert names == AV and [s.name for s in seqs] == stems
    assert [s.sequence for s in seqs] == ["seq0", "seq1", "seq0"]
    for s, (_, pred, label, face) in zip(seqs, ref):
        np.testing.assert_allclose(s.predictions, pred, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s.labels, label)
        np.testing.assert_array_equal(s.face_found, face)
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(s + ".png" for s in stems)
    assert not list(out.rglob("*.tmp"))


def test_run_test_without_labels_writes_predictions_only(tmp_path, write_h5):
    model = tiny()
    path = write_h5(tmp_path / "u.h5", [7], names=[], kind="none")
    result = run_test(model, [path], tmp_path / "out", window=3, device="cpu", plot=True)
    assert result.metrics is None and result.metrics_path is None
    assert not (tmp_path / "out" / "metrics.json").exists()
    series = read_prediction_csv(tmp_path / "out" / "predictions" / "seq0.csv")
    np.testing.assert_allclose(series.values, whole(model, SequenceFile(path).read(0).frames),
                               rtol=1e-5, atol=1e-6)
    assert load_predictions(result.predictions_path)[1][0].labels is None
    assert [p.name for p in result.plot_paths] == ["seq0.png"]


def test_files_of_other_frame_sizes_are_predicted_with_a_warning(tmp_path, write_h5):
    model = tiny()
    small = write_h5(tmp_path / "small.h5", [5], size=24)
    big = write_h5(tmp_path / "big.h5", [6], seed=1)
    with pytest.warns(UserWarning, match=r"small\.h5: frames are 24x24 but the model expects 32x32"):
        result = run_test(model, [small, big], tmp_path / "out", window=2, device="cpu")
    assert len(result.warnings) == 1
    for seq, path in zip(result.sequences, [small, big]):
        np.testing.assert_allclose(seq.predictions, whole(model, SequenceFile(path).read(0).frames),
                                   rtol=1e-5, atol=1e-6)


def test_label_columns_are_matched_by_name(tmp_path, write_h5):
    model = tiny(names=["valence", "arousal"])
    path = write_h5(tmp_path / "a.h5", [10])
    result = run_test(model, [path], tmp_path / "out", device="cpu")
    clip = SequenceFile(path).read(0)
    np.testing.assert_array_equal(result.sequences[0].labels, clip.labels[:, ::-1])
    expected = evaluate_continuous(whole(model, clip.frames), clip.labels[:, ::-1],
                                   names=["valence", "arousal"], files=["seq0"])
    assert result.metrics["metrics"]["pooled"]["arousal"]["ccc"] == pytest.approx(
        expected.pooled["arousal"].ccc, rel=1e-5)


def test_multiclass_metrics_and_confusion_plot(tmp_path, write_h5):
    classes = ["anger", "happy", "neutral"]
    model = tiny(head="multiclass", names=classes)
    path = write_h5(tmp_path / "c.h5", [6, 9], names=classes, kind="multiclass",
                    labels=one_hot)
    result = run_test(model, [path], tmp_path / "out", window=4, device="cpu", plot=True)
    ref = direct(model, [path])
    scores = np.concatenate([r[1] for r in ref])
    np.testing.assert_allclose(scores.sum(1), 1, atol=1e-6)  # probabilities
    target = np.concatenate([r[2] for r in ref]).argmax(1)
    expected = evaluate_categorical(scores, target, 3, classes).to_dict()
    assert result.metrics["metrics"] == expected
    assert (tmp_path / "out" / "plots" / "confusion.png").is_file()


def test_multilabel_metrics(tmp_path, write_h5):
    names = ["smile", "frown"]
    model = tiny(head="multilabel", names=names)
    path = write_h5(tmp_path / "m.h5", [12], names=names, kind="multilabel",
                    labels=lambda n, rng: rng.integers(0, 2, (n, 2)))
    result = run_test(model, [path], tmp_path / "out", device="cpu", include_no_face=False)
    (_, scores, labels, face), = direct(model, [path])
    expected = evaluate_multilabel(scores[face], labels[face], 0.5, names).to_dict()
    assert result.metrics["metrics"] == expected


def test_mismatched_labels_fail_before_any_work_naming_the_file(tmp_path, monkeypatch,
                                                                 write_h5):
    good = write_h5(tmp_path / "data" / "good.h5", [5])
    bad = write_h5(tmp_path / "data" / "bad.h5", [5], names=["happy", "sad"])
    calls = []
    monkeypatch.setattr(testrun, "predict_sequences", lambda *a, **k: calls.append(1))
    with pytest.raises(InputError, match=r"bad\.h5.*no label for \['arousal', 'valence'\]"):
        run_test(tiny(), [good, bad], tmp_path / "out", device="cpu")
    with pytest.raises(InputError, match=r"good\.h5.*continuous labels.*multiclass"):
        run_test(tiny(head="multiclass", names=AV), [good], tmp_path / "out", device="cpu")
    assert calls == [] and not (tmp_path / "out").exists()


def test_nan_labels_are_refused(tmp_path, write_h5):
    def with_nan(n, rng):
        y = rng.normal(size=(n, 2))
        y[3, 1] = np.nan
        return y

    path = write_h5(tmp_path / "nan.h5", [6], labels=with_nan)
    with pytest.raises(InputError, match=r"nan\.h5: sequence 'seq0': labels hold NaN.*row 3"):
        run_test(tiny(), [path], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_no_partial_files(tmp_path, monkeypatch, write_h5):
    path = write_h5(tmp_path / "a.h5", [6])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(testrun, "write_predictions_h5", broken)
    with pytest.raises(OSError, match="disk full"):
        run_test(tiny(), [path], tmp_path / "out", device="cpu")
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] \
        if (tmp_path / "out").exists() else []
    assert leftovers == []


# ------------------------------------------------------------------------ CLI

def cli():
    from end2you_visual.cli.main import cli as group
    from end2you_visual.cli.test import test as command

    if "test" not in group.commands:
        group.add_command(command)
    return group


def metrics_of(out):
    return json.loads((out / "metrics.json").read_text())


def test_cli_test(tmp_path, write_h5):
    ckpt = save_checkpoint(tiny(), tmp_path / "tiny.pt")
    path = write_h5(tmp_path / "a.h5", [9])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["test", str(path), "--model", str(ckpt), "--out",
                                        str(out), "--window", "4", "--device", "cpu",
                                        "--exclude-no-face"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^CCC \(all frames\): arousal -?\d\.\d{4}, valence -?\d\.\d{4}\n"
                     r"CCC \(face frames\): arousal ", result.output, re.M), result.output
    assert metrics_of(out)["ccc"].keys() == {"all_frames", "face_frames"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["include_no_face"] is False and metrics["window"] == 4
    assert len(read_prediction_csv(out / "predictions" / "seq0.csv").time) == 9

    bad = write_h5(tmp_path / "bad.h5", [3], names=["x", "y"])
    result = CliRunner().invoke(cli(), ["test", str(bad), "--model", str(ckpt), "--out",
                                        str(tmp_path / "out2"), "--device", "cpu"])
    assert result.exit_code == 1 and "bad.h5" in result.output and "Error" in result.output


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_an_earlier_run_is_refused_then_replaced_only_with_overwrite(tmp_path, write_h5):
    model = tiny()
    first = write_h5(tmp_path / "a.h5", [5, 4])            # labelled: seq0, seq1
    second = write_h5(tmp_path / "u.h5", [3], names=[], kind="none")  # unlabelled: seq0
    out = tmp_path / "out"
    run_test(model, [first], out, window=4, device="cpu", plot=True)
    earlier = _files(out)
    assert earlier == ["labels/seq0.csv", "labels/seq1.csv", "metrics.json", "plots/seq0.png",
                       "plots/seq1.png", "predictions.h5", "predictions/seq0.csv",
                       "predictions/seq1.csv"]
    content = {p: (out / p).read_bytes() for p in earlier}
    (out / "notes.txt").write_text("mine\n")  # not an output of test: never touched

    with pytest.raises(InputError, match=rf"{out}: already holds the outputs of a test run "
                                         r"\(predictions.h5, metrics.json, predictions/seq0.csv "
                                         r"and 5 more\); use --overwrite"):
        run_test(model, [second], out, device="cpu")
    assert {p: (out / p).read_bytes() for p in earlier} == content

    result = run_test(model, [second], out, device="cpu", overwrite=True)
    # Only the new run's files: no seq1.csv, metrics or plots of the earlier run left over.
    assert _files(out) == ["notes.txt", "predictions.h5", "predictions/seq0.csv"]
    assert result.metrics is None and (out / "notes.txt").read_text() == "mine\n"
    assert len(read_prediction_csv(out / "predictions" / "seq0.csv").time) == 3


def test_bad_devices_and_outputs_fail_before_any_work(tmp_path, monkeypatch, write_h5):
    path = write_h5(tmp_path / "a.h5", [4])
    calls = []
    monkeypatch.setattr(testrun, "resolve_model", lambda *a: calls.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"^--device: 'cuda' asked for, but CUDA is not "):
        run_test(tiny(), [path], tmp_path / "out", device="cuda")
    with pytest.raises(InputError, match=r"^--device: 'gpu' is not a device"):
        run_test(tiny(), [path], tmp_path / "out", device="gpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"^--out {tmp_path}/file/out: cannot be created: "
                                         rf"{tmp_path}/file is a file, not a folder"):
        run_test(tiny(), [path], tmp_path / "file" / "out", device="cpu")
    assert calls == [] and not (tmp_path / "out").exists()


def test_categorical_csvs_have_a_top_class_column(tmp_path, write_h5):
    classes = ["anger", "happy", "neutral"]
    model = tiny(head="multiclass", names=classes)
    path = write_h5(tmp_path / "c.h5", [9], names=classes, kind="multiclass", labels=one_hot)
    run_test(model, [path], tmp_path / "out", window=4, device="cpu")
    (_, scores, _, face), = direct(model, [path])
    lines = (tmp_path / "out" / "predictions" / "seq0.csv").read_text().splitlines()
    assert lines[0] == "time,anger,happy,neutral,face_found,top_class"
    expected = [classes[k] if f else "" for k, f in zip(scores.argmax(1), face)]
    assert [line.split(",")[-1] for line in lines[1:]] == expected
    assert expected.count("") == 2  # frames 1 and 5 have no face
    series = read_prediction_csv(tmp_path / "out" / "predictions" / "seq0.csv")
    assert series.names == classes  # evaluate reads the outputs, not the class names
    np.testing.assert_allclose(series.values, scores, rtol=1e-5, atol=1e-6)

    run_test(tiny(), [write_h5(tmp_path / "r.h5", [3])], tmp_path / "reg", device="cpu")
    header = (tmp_path / "reg" / "predictions" / "seq0.csv").read_text().splitlines()[0]
    assert header == "time,arousal,valence,face_found"  # regression: no class column


class RecordingBar:
    bars = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.closed, self.kwargs = total, 0, False, kwargs
        RecordingBar.bars.append(self)

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


def test_cli_test_bar_has_a_total_and_ends_full(tmp_path, monkeypatch, write_h5):
    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    RecordingBar.bars = []
    ckpt = save_checkpoint(tiny(), tmp_path / "tiny.pt")
    path = write_h5(tmp_path / "a.h5", [9, 0, 5])
    result = CliRunner().invoke(cli(), ["test", str(path), "--model", str(ckpt), "--out",
                                        str(tmp_path / "out"), "--window", "4", "--lanes", "1",
                                        "--device", "cpu"])
    assert result.exit_code == 0, result.output
    [bar] = RecordingBar.bars
    assert (bar.total, bar.n, bar.closed) == (14, 14, True)
    assert bar.kwargs["unit"] == "frame"


def _messages(stderr):
    """The lines of ``stderr`` but the progress bar's redraws."""
    return [s for s in stderr.replace("\r", "\n").splitlines()
            if s.strip() and not s.startswith("test:")]


def test_cli_test_warnings_are_one_line(tmp_path, write_h5):
    ckpt = save_checkpoint(tiny(), tmp_path / "tiny.pt")
    small = write_h5(tmp_path / "small.h5", [3], size=24)
    result = CliRunner().invoke(cli(), ["test", str(small), "--model", str(ckpt), "--out",
                                        str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = f"Warning: {small}: frames are 24x24 but the model expects 32x32"
    assert _messages(result.stderr) == [warning]  # no UserWarning, no source line


def test_warnings_are_one_line_in_a_real_process(tmp_path, write_h5):
    import subprocess
    import sys

    ckpt = save_checkpoint(tiny(), tmp_path / "tiny.pt")
    small = write_h5(tmp_path / "small.h5", [3], size=24)
    run = subprocess.run([sys.executable, "-m", "end2you_visual.cli.main", "test", str(small),
                          "--model", str(ckpt), "--out", str(tmp_path / "out"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert _messages(run.stderr) == [
        f"Warning: {small}: frames are 24x24 but the model expects 32x32"]


def test_cli_test_over_an_earlier_run(tmp_path, write_h5):
    ckpt = save_checkpoint(tiny(), tmp_path / "tiny.pt")
    path = write_h5(tmp_path / "a.h5", [4])
    out = tmp_path / "out"
    args = ["test", str(path), "--model", str(ckpt), "--out", str(out), "--device", "cpu"]
    assert CliRunner().invoke(cli(), args).exit_code == 0
    (out / "predictions" / "stale.csv").write_text("time,arousal,valence\n")
    again = CliRunner().invoke(cli(), args)
    assert again.exit_code == 1
    assert again.output.startswith(f"Error: {out}: already holds the outputs of a test run")
    assert "--overwrite" in again.output and (out / "predictions" / "stale.csv").exists()
    forced = CliRunner().invoke(cli(), args + ["--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert _files(out) == ["labels/seq0.csv", "metrics.json", "predictions.h5",
                           "predictions/seq0.csv"]


def test_split_keeps_its_sequences_and_names_a_missing_split(tmp_path, write_h5,
                                                             write_sequences):
    splits = ["train", "Val", "test"]
    path = write_sequences(tmp_path / "s.h5", [3, 3, 3],
                           lambda q, n, rng: (random_frames(n, q), np.zeros((n, 2))),
                           names=AV, kind="continuous", size=SIZE, name="seq{}".format,
                           metadata=lambda q: {"split": splits[q]})
    result = run_test(tiny(), [path], tmp_path / "valid", device="cpu", split="valid")
    assert [(s.name, s.split) for s in result.sequences] == [("seq1", "Val")]
    assert [s.split for s in load_predictions(result.predictions_path)[1]] == ["Val"]
    unsplit = write_h5(tmp_path / "u.h5", [3])
    with pytest.raises(InputError, match=r"^--split: no sequence of split 'test' \(test, "
                                         r"testing\) in the data \(it records no split"):
        run_test(tiny(), [unsplit], tmp_path / "out", device="cpu", split="test")


# ------------------------------- the Python API checks as the CLI does (issue 24)
def test_window_0_means_whole_sequences_in_python_as_on_the_command_line(tmp_path, write_h5):
    model = tiny()
    path = write_h5(tmp_path / "a.h5", [9, 14])
    frames = SequenceFile(path).read(1).frames
    ref = whole(model, frames)
    for source in [frames, (path, 1), iter([frames[:5], frames[5:]])]:
        got = predict_sequence(model, source, window=0)
        assert got.shape == (14, 2)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    (dict(window=-1), "--window: must be >= 1, got -1"),
    (dict(window=2.5), "--window: must be a whole number, got 2.5"),
    (dict(window="5"), "--window: must be a whole number, got '5'"),
    (dict(precision="fp16"), "--precision: must be one of ['auto', 'bf16', 'fp32'], got 'fp16'"),
])
def test_predict_sequence_refuses_options_out_of_range(options, message):
    with pytest.raises(InputError) as err:
        predict_sequence(tiny(), random_frames(4, 0), **options)
    assert str(err.value) == message


@pytest.mark.parametrize("options, message", [
    (dict(window=-3), "--window: must be >= 1, got -3"),
    (dict(lanes=0), "--lanes: must be >= 1, got 0"),
    (dict(split="dev"), "--split: must be one of ['all', 'train', 'valid', 'test'], got 'dev'"),
    (dict(end2you_fps=0), "--end2you-fps: must be > 0, got 0"),
    (dict(max_plots=-1), "max_plots: must be >= 0, got -1"),
])
def test_run_test_refuses_options_out_of_range_before_any_work(tmp_path, write_h5, options,
                                                               message):
    path = write_h5(tmp_path / "a.h5", [9])
    with pytest.raises(InputError) as err:
        run_test(tiny(), [path], tmp_path / "out", **options)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_run_test_with_window_0_predicts_whole_sequences(tmp_path, write_h5):
    model = tiny()
    path = write_h5(tmp_path / "a.h5", [9, 14])
    run_test(model, [path], tmp_path / "out", window=0, device="cpu")
    _, preds = load_predictions(tmp_path / "out" / "predictions.h5")
    (seq1,) = [p for p in preds if p.sequence == "seq1"]
    ref = whole(model, SequenceFile(path).read(1).frames)
    np.testing.assert_allclose(seq1.predictions, ref, rtol=1e-5, atol=1e-6)


def test_run_test_progress_false_or_a_callable(tmp_path, write_h5):
    path = write_h5(tmp_path / "a.h5", [5, 3])
    model = tiny()
    quiet = run_test(model, [path], tmp_path / "quiet", window=2, device="cpu", progress=False)
    counted = []
    told = run_test(model, [path], tmp_path / "told", window=2, device="cpu",
                    progress=counted.append)
    assert quiet.frames == told.frames == 8 and sum(counted) == 8
    assert (tmp_path / "quiet" / "predictions.h5").is_file()
