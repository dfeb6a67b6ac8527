"""`predict`: a video straight to per-frame predictions, on the bundled real clips."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from end2you_visual.errors import InputError
from end2you_visual.faces import FaceBatch, FacePipeline
from end2you_visual.framing import Framing
from end2you_visual.inference import predict_sequence
from end2you_visual.models import build_model, read_checkpoint, save_checkpoint
from end2you_visual.predict import predict_video, predict_videos
from end2you_visual.predictions import read_prediction_csv, write_prediction_csv
from end2you_visual.video import iter_frame_batches, probe_video

DATA = Path(__file__).parent / "data"
CUT = DATA / "face_noface.mov"      # a face, then a cut to no face (192 frames at 30 fps)
SINGLE = DATA / "single_face.mp4"   # one face, 72 frames
AV = ["arousal", "valence"]
# Fast face settings for CPU tests (the defaults detect on every full-size frame).
FAST = dict(detect_every=8, detect_scale=0.25, batch_size=64, min_face_size=40)



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=8, num_layers=1,
                        label_names=AV, input_size=24)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_face_then_no_face(checkpoint, tmp_path):
    result = predict_video(CUT, checkpoint, out_dir=tmp_path, device="cpu", **FAST)
    n = probe_video(CUT, count=True).n_frames
    assert result.n_frames == n == 192
    found = result.face_found
    # The face is on screen for the first 2.5 s (75 frames), then never again.
    assert found[:60].all() and not found[80:].any()

    rows = read_rows(tmp_path / "face_noface.csv")
    assert rows[0] == ["time", "arousal", "valence", "face_found"]
    assert len(rows) == 1 + n  # one row per frame
    for i, row in enumerate(rows[1:]):
        assert float(row[0]) == pytest.approx(i / 30.0)
        assert row[3] == ("1" if found[i] else "0")
        if found[i]:
            assert all(cell != "" for cell in row[1:3])
        else:
            assert row[1:3] == ["", ""]  # no face: no made-up value
    series = read_prediction_csv(tmp_path / "face_noface.csv")
    np.testing.assert_array_equal(np.isnan(series.values), ~found[:, None].repeat(2, 1))
    np.testing.assert_allclose(series.values[found], result.predictions[found], rtol=1e-6)

    image = Image.open(tmp_path / "face_noface.png")
    assert result.plot_path == tmp_path / "face_noface.png" and image.size[0] > 100


class StubPipeline:
    """Stands in for FacePipeline: a corner of each frame as the crop, no face every 5th."""

    size = 24

    def __init__(self):
        self.seen, self.resets = 0, 0

    def reset(self):
        self.resets += 1

    def process(self, frames):
        index = np.arange(self.seen, self.seen + len(frames))
        self.seen += len(frames)
        crops = np.ascontiguousarray(frames[:, 100:148:2, 300:348:2])
        return FaceBatch(crops, np.zeros((len(frames), 4), np.float32), index % 5 != 0,
                         np.ones(len(frames), np.float32))


def test_streamed_predictions_equal_one_pass_over_the_crops(checkpoint):
    from end2you_visual.zoo import load_pretrained

    model = load_pretrained(checkpoint)
    stub = StubPipeline()
    result = predict_video(SINGLE, model, device="cpu", batch_size=20, pipeline=stub)
    assert result.csv_path is None and result.n_frames == 72 and stub.resets == 2
    assert result.face_found.tolist() == [i % 5 != 0 for i in range(72)]
    # The same crops predicted in one pass: the same numbers (state carried
    # over the 4 batches), and NaN exactly where no face was found.
    frames = np.concatenate([f for _, f in iter_frame_batches(SINGLE, 72)])
    crops = np.ascontiguousarray(frames[:, 100:148:2, 300:348:2])
    expected = predict_sequence(model, crops)
    found = result.face_found
    np.testing.assert_allclose(result.predictions[found], expected[found], rtol=1e-4, atol=1e-5)
    assert np.isnan(result.predictions[~found]).all()


def test_pipeline_must_crop_at_the_models_input_size(checkpoint):
    stub = StubPipeline()
    stub.size = 32
    with pytest.raises(ValueError, match="32 px.*expects 24"):
        predict_video(SINGLE, checkpoint, device="cpu", pipeline=stub)


def test_write_prediction_csv_leaves_gaps_empty(tmp_path):
    values = np.array([[0.5, -1.0], [np.nan, np.nan], [0.25, 2.0]])
    write_prediction_csv(tmp_path / "p.csv", [0.0, 0.04, 0.08], AV, values, [1, 0, 1])
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "time,arousal,valence,face_found", "0.0,0.5,-1.0,1", "0.04,,,0", "0.08,0.25,2.0,1"]


def test_unreadable_video_fails_before_any_work(checkpoint, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match="broken.mp4"):
        predict_videos([SINGLE, bad], checkpoint, tmp_path / "out", device="cpu", **FAST)
    assert not (tmp_path / "out").exists()


def cli():
    from end2you_visual.cli.main import cli as group
    from end2you_visual.cli.predict import predict as command

    if "predict" not in group.commands:
        group.add_command(command)
    return group


def test_cli_predict(checkpoint, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["predict", str(SINGLE), "--model", str(checkpoint),
                                        "--out", str(out), "--device", "cpu",
                                        "--detect-every", "8", "--batch-size", "64",
                                        "--detect-scale", "0.25", "--min-face-size", "40"])
    assert result.exit_code == 0, result.output
    assert "single_face.mp4: 72 frames, face in" in result.output
    assert len(read_rows(out / "single_face.csv")) == 73
    assert (out / "single_face.png").is_file()
    csv_text = (out / "single_face.csv").read_text()

    result = CliRunner().invoke(cli(), ["predict", str(SINGLE), "--model", str(checkpoint),
                                        "--out", str(out), "--device", "cpu", "--no-plot",
                                        "--overwrite", "--detect-every", "8", "--batch-size",
                                        "64", "--detect-scale", "0.25", "--min-face-size", "40"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["single_face.csv"]  # no stale plot
    assert (out / "single_face.csv").read_text() == csv_text

    result = CliRunner().invoke(cli(), ["predict", str(SINGLE), "--model",
                                        str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "nope.pt" in result.output


CLASSES = ["anger", "happy", "neutral"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("resnet_tiny", head="multiclass", outputs=3, hidden_size=8,
                        num_layers=1, label_names=CLASSES, input_size=24)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "classes.pt")


def test_categorical_csv_has_a_top_class_and_the_plot_one_titled_panel(classifier, tmp_path,
                                                                       monkeypatch):
    from end2you_visual import plots

    drawn = []
    real = plots.prediction_figure
    monkeypatch.setattr(plots, "prediction_figure",
                        lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    result = predict_video(SINGLE, classifier, out_dir=tmp_path, device="cpu", batch_size=36,
                           pipeline=StubPipeline())
    rows = read_rows(tmp_path / "single_face.csv")
    assert rows[0] == ["time", *CLASSES, "face_found", "top_class"]
    found = result.face_found
    expected = [CLASSES[int(np.argmax(p))] if f else "" for p, f in
                zip(result.predictions, found)]
    assert [r[-1] for r in rows[1:]] == expected and expected.count("") == 15
    assert read_prediction_csv(tmp_path / "single_face.csv").names == CLASSES

    [fig] = drawn
    [ax] = fig.axes
    assert ax.get_title() == f"single_face.mp4 · model {classifier}"
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel() == "class probability (stacked)"


def test_earlier_outputs_are_refused_then_replaced_with_overwrite(checkpoint, tmp_path):
    first = predict_video(SINGLE, checkpoint, out_dir=tmp_path, device="cpu",
                          pipeline=StubPipeline())
    content = {p: p.read_bytes() for p in (first.csv_path, first.plot_path)}
    with pytest.raises(InputError, match=rf"^{tmp_path}: already holds predictions for these "
                                         r"videos \(single_face.csv, single_face.png\); "
                                         r"use --overwrite"):
        predict_video(SINGLE, checkpoint, out_dir=tmp_path, device="cpu",
                      pipeline=StubPipeline())
    with pytest.raises(InputError, match="use --overwrite"):
        predict_videos([SINGLE], checkpoint, tmp_path, device="cpu", pipeline=StubPipeline())
    assert {p: p.read_bytes() for p in content} == content

    again = predict_video(SINGLE, checkpoint, out_dir=tmp_path, device="cpu", plot=False,
                          pipeline=StubPipeline(), overwrite=True)
    # The new CSV, and no plot of the earlier run beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single_face.csv"]
    assert again.csv_path.read_bytes() == content[first.csv_path]  # same model, same crops


def test_bad_device_or_out_fails_before_any_work(checkpoint, tmp_path, monkeypatch):
    from end2you_visual import predict as module

    monkeypatch.setattr(module, "resolve_model", lambda *a: pytest.fail("model loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"^--device: 'cuda' asked for"):
        predict_videos([SINGLE], checkpoint, tmp_path / "out", device="cuda")
    with pytest.raises(InputError, match=r"^--device: 'gpu' is not a device"):
        predict_videos([SINGLE], checkpoint, tmp_path / "out", device="gpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"^--out {tmp_path}/file/out: cannot be created"):
        predict_videos([SINGLE], checkpoint, tmp_path / "file" / "out", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# ------------------------------------- the framing a model was trained on (issue 16)

MARGIN = 0.05
FRAMING_LINE = ("using the model's framing: margin 0.05 (MTCNN face boxes plus the margin); "
                "--margin (margin=) overrides")


@pytest.fixture(scope="module")
def framed(tmp_path_factory):
    """A checkpoint whose training crops were cut with margin MARGIN."""
    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=8, num_layers=1,
                        label_names=AV, input_size=24)
    model.framing = Framing(margin=MARGIN, size=24)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "framed.pt")


def spy_on_pipelines(monkeypatch, stub=False):
    """The margins of the face pipelines predict makes (real ones, or StubPipelines)."""
    margins = []
    real = FacePipeline.from_settings

    def pipeline(settings, *args, **kwargs):
        made = StubPipeline() if stub else real(settings, *args, **kwargs)
        margins.append(settings.margin if stub else made.cropper.margin)
        return made
    monkeypatch.setattr(FacePipeline, "from_settings", pipeline)
    return margins


def test_a_model_crops_with_its_framing_unless_a_margin_is_given(framed, checkpoint,
                                                                monkeypatch):
    margins = spy_on_pipelines(monkeypatch)
    lines = []
    run = dict(device="cpu", announce=lines.append, **FAST)
    framing = predict_video(SINGLE, framed, **run)
    given = predict_video(SINGLE, framed, margin=0.3, **run)
    assert "framing" not in read_checkpoint(checkpoint)  # a checkpoint from before framing
    old = predict_video(SINGLE, checkpoint, **run)
    assert margins == [MARGIN, 0.3, 0.2]  # what the FacePipelines cropped with
    assert [r.face_settings.margin for r in (framing, given, old)] == [MARGIN, 0.3, 0.2]
    assert framing.face_settings.size == 24 and framing.face_settings.detect_every == 8
    assert lines == [FRAMING_LINE, "margin 0.3 as given; the model's framing is margin 0.05 "
                                   "(MTCNN face boxes plus the margin)"]
    # Other crops, other predictions: the margin reached the model.
    found = framing.face_found & given.face_found
    assert found.sum() >= 60
    assert np.abs(framing.predictions[found] - given.predictions[found]).max() > 1e-3
    # A given margin equal to the framing's needs no word.
    predict_video(SINGLE, framed, margin=MARGIN, **run)
    assert margins[-1] == MARGIN and len(lines) == 2


def test_predict_and_extract_share_one_framing_to_face_settings_step():
    from end2you_visual.framing import model_face_settings

    framing, lines = Framing(margin=MARGIN, size=24), []
    settings = model_face_settings({"margin": None, "detect_every": 8}, framing, 24,
                                   torch.device("cpu"), lines.append)
    assert (settings.margin, settings.crop, settings.size, settings.device) == (
        MARGIN, "box", 24, "cpu")
    assert settings.detect_every == 8 and lines == [FRAMING_LINE]
    given = model_face_settings({"margin": 0.3}, framing, 48, "cpu", lines.append)
    assert (given.margin, given.size) == (0.3, 48) and lines[1:] == [
        "margin 0.3 as given; the model's framing is margin 0.05 (MTCNN face boxes plus the "
        "margin)"]
    # No framing (an older checkpoint), or no one to tell: nothing said.
    assert model_face_settings({}, None, 24, "cpu", lines.append).margin == 0.2
    assert model_face_settings({}, framing, 24, "cpu").margin == MARGIN and len(lines) == 2


def test_cli_predict_says_it_uses_the_models_framing(framed, checkpoint, tmp_path, monkeypatch):
    margins = spy_on_pipelines(monkeypatch, stub=True)
    args = ["predict", str(SINGLE), "--device", "cpu", "--no-plot"]
    done = CliRunner().invoke(cli(), args + ["--model", str(framed), "--out", str(tmp_path / "a")])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == FRAMING_LINE
    done = CliRunner().invoke(cli(), args + ["--model", str(framed), "--out", str(tmp_path / "b"),
                                             "--margin", "0.5"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == ("margin 0.5 as given; the model's framing is margin "
                                           "0.05 (MTCNN face boxes plus the margin)")
    done = CliRunner().invoke(cli(), args + ["--model", str(checkpoint), "--out",
                                             str(tmp_path / "c")])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"{SINGLE}: 72 frames")  # no framing: nothing to say
    assert margins == [MARGIN, 0.5, 0.2]
