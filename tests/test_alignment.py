"""Aligned face crops (``--crop aligned``): the similarity estimate, the warp,
the landmarks stored by `generate`, and the crop kind in a model's framing."""
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.crops import TEMPLATE_112, similarity_transform, template_points
from end2you_visual.data import SequenceFile
from end2you_visual.errors import InputError
from end2you_visual.faces import FaceBatch, FacePipeline
from end2you_visual.framing import Framing, data_framing, file_framing, resolve_face_settings
from end2you_visual.generate import GenerateSettings, generate
from end2you_visual.hdf5 import SequenceWriter
from end2you_visual.models import build_model, save_checkpoint

SINGLE = Path(__file__).parent / "data" / "single_face.mp4"  # one real face, 72 frames

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def similarity(points, angle, scale, shift):
    """``points`` rotated by ``angle`` degrees, scaled, then shifted."""
    a = math.radians(angle)
    rotation = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ rotation.T + np.asarray(shift), rotation


# ------------------------------------------------------------ the estimate

def test_similarity_transform_recovers_a_known_transform():
    source = np.array([[0.0, 0.0], [3.0, 1.0], [1.0, 4.0], [-2.0, 2.5], [0.5, -1.5]])
    cases = [(30.0, 2.5, (10.0, -4.0)), (-170.0, 0.25, (-3.0, 7.5)), (0.0, 1.0, (0.0, 0.0))]
    targets, rotations = zip(*(similarity(source, *case) for case in cases))
    # Batched: one transform per set of points.
    found = similarity_transform(torch.from_numpy(np.stack([source] * 3)),
                                 torch.from_numpy(np.stack(targets)))
    assert found.shape == (3, 2, 3) and found.dtype == torch.float64
    for transform, rotation, (_, _, shift) in zip(found.numpy(), rotations, cases):
        np.testing.assert_allclose(transform[:, :2], rotation, atol=1e-12)
        np.testing.assert_allclose(transform[:, 2], shift, atol=1e-12)


def test_similarity_transform_never_reflects():
    # A mirror image has no exact similarity: the best one keeps handedness.
    source = TEMPLATE_112
    mirrored = source * np.array([-1.0, 1.0])
    transform = similarity_transform(torch.from_numpy(source), torch.from_numpy(mirrored)).numpy()
    assert np.linalg.det(transform[:, :2]) >= 0
    fitted = source @ transform[:, :2].T + transform[:, 2]
    assert np.abs(fitted - mirrored).max() > 1  # not reached: it would need a reflection


# ---------------------------------------------------------------- the warp

def dots(shape, centres, radius=2.5):
    """A black uint8 RGB image with white discs at ``centres`` (x, y)."""
    ys, xs = np.mgrid[:shape[0], :shape[1]] + 0.5  # pixel centres
    image = np.zeros(shape + (3,), np.uint8)
    for x, y in centres:
        image[(xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2] = 255
    return image


def blob_centres(crop, halves):
    """Brightness centroids (x, y) of the crop's left and right halves."""
    grey = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]] + 0.5
    out = []
    for part in halves:
        w = np.where(part, grey, 0)
        out.append((float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())))
    return np.array(out)


@pytest.mark.parametrize("margin, size", [(0.0, 112), (0.25, 96)])
def test_aligned_crop_puts_the_eyes_level_at_the_templates_places(margin, size):
    # A face tilted 25 degrees, 2.2x the template's size: its eyes are two dots.
    landmarks, _ = similarity(TEMPLATE_112, 25.0, 2.2, (130.0, 60.0))
    frame = dots((360, 400), landmarks[:2])
    assert abs(landmarks[1, 1] - landmarks[0, 1]) > 30  # far from level in the frame
    pipeline = FacePipeline(size=size, margin=margin, crop="aligned")
    crop = pipeline.align(frame[None], landmarks[None])[0]
    assert crop.shape == (size, size, 3)
    expected = template_points(size, margin)[:2]
    middle = expected[:, 0].mean()
    xs = np.arange(size)[None, :] + 0.5
    found = blob_centres(crop, [np.broadcast_to(xs < middle, (size, size)),
                                np.broadcast_to(xs >= middle, (size, size))])
    np.testing.assert_allclose(found, expected, atol=0.1)
    assert abs(found[1, 1] - found[0, 1]) < 0.3  # level (the template's eyes: 0.2 px apart at 112)
    # The same through cut(): landmarks win over the box.
    np.testing.assert_array_equal(pipeline.cut(frame[None], [[0, 0, 10, 10]], landmarks[None]),
                                  crop[None])


def test_aligned_crop_pads_with_zeros_and_averages_when_shrinking():
    # A one-pixel checkerboard, the face 4x the template: each output pixel
    # averages 4 x 4 samples (grey), point sampling would give black and white.
    board = ((np.indices((400, 400)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frame = np.repeat(board[None, ..., None], 3, axis=3)
    landmarks, _ = similarity(TEMPLATE_112, 0.0, 4.0, (-200.0, -200.0))  # top-left quarter off
    crop = FacePipeline(size=56, margin=0.0, crop="aligned").align(frame, landmarks[None])[0]
    assert (crop[:24, :24] == 0).all()  # outside the frame: zeros, as box crops
    inside = crop[30:, 30:]
    assert inside.min() >= 100 and inside.max() <= 160


def test_template_points_frame_the_template_with_the_margin():
    np.testing.assert_allclose(template_points(112, 0.0), TEMPLATE_112)
    # Margin 0.5: 168 template units shown, the 112 frame centred (28 units each side).
    np.testing.assert_allclose(template_points(168, 0.5), TEMPLATE_112 + 28.0)
    with pytest.raises(InputError, match=r"^--crop: must be one of \['box', 'aligned'\]"):
        FacePipeline(crop="tilted")


# ------------------------------------------------- generate: real landmarks

@pytest.fixture(scope="module")
def aligned_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned")
    settings = GenerateSettings(size=112, crop="aligned", batch_size=24)
    (result,) = generate(SINGLE, out, settings, progress=False)
    return Path(result.output)


def eye_angles(points):
    eyes = points[:, :2]
    return np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))


def test_generate_aligned_stores_landmarks_and_level_crops(aligned_file):
    seqfile = SequenceFile(aligned_file)
    assert seqfile.settings["crop"] == "aligned"
    clip = seqfile.read(0)
    found, boxes, points = clip.face_found, clip.boxes, clip.landmarks
    assert points.shape == (72, 5, 2) and points.dtype == np.float32
    assert found.sum() >= 70
    assert np.isnan(points[~found]).all() and np.isfinite(points[found]).all()
    eyes = points[found, :2]
    box = boxes[found, None]
    assert ((eyes[..., 0] > box[..., 0]) & (eyes[..., 0] < box[..., 2])
            & (eyes[..., 1] > box[..., 1]) & (eyes[..., 1] < box[..., 3])).all()
    # The head is tilted in the video; MTCNN finds the eyes level in the crops.
    tilt = np.abs(eye_angles(points[found]))
    assert tilt.mean() > 1.5
    detector = FacePipeline(min_face_size=40)
    again = [d for d in detector.detect(clip.frames[found], landmarks=True) if len(d[0])]
    assert len(again) == found.sum()
    in_crops = np.stack([d[2][0] for d in again])
    assert np.abs(eye_angles(in_crops)).mean() < 0.6 * tilt.mean()
    np.testing.assert_allclose(in_crops[:, :2].mean(axis=0), template_points(112, 0.2)[:2],
                               atol=3)


def test_landmarks_are_smoothed_and_interpolated_like_the_boxes():
    from end2you_visual.video import iter_frame_batches

    frames = next(iter(iter_frame_batches(SINGLE, 24)))[1]
    raw = FacePipeline(smoothing=0, detector="full").process(frames)
    assert np.isfinite(raw.landmarks).all()
    # Every 4th frame detected: the frames between lie on the line between.
    sparse = FacePipeline(smoothing=0, detect_every=4, detector="full").process(frames)
    for a in range(0, 20, 4):
        t = (np.arange(1, 4) / 4)[:, None, None]
        np.testing.assert_allclose(sparse.landmarks[a + 1:a + 4],
                                   (1 - t) * sparse.landmarks[a] + t * sparse.landmarks[a + 4],
                                   atol=1e-3)
    np.testing.assert_array_equal(sparse.landmarks[::4], raw.landmarks[::4])
    # Smoothing: less frame-to-frame jitter, never far from the detections.
    smooth = FacePipeline(smoothing=0.5, detector="full").process(frames)
    assert np.array_equal(smooth.landmarks[0], raw.landmarks[0])  # a track starts unsmoothed

    def jitter(points):
        return np.abs(np.diff(points, 2, axis=0)).mean()
    assert jitter(smooth.landmarks) < 0.8 * jitter(raw.landmarks)
    assert np.abs(smooth.landmarks - raw.landmarks).max() < 6


def test_files_without_landmarks_still_read(tmp_path):
    path = tmp_path / "old.h5"
    with SequenceWriter(path, 8) as writer:
        writer.begin_sequence("s")
        writer.append(np.zeros((3, 8, 8, 3), np.uint8), np.arange(3) / 30.0,
                      landmarks=np.arange(30, dtype=np.float32).reshape(3, 5, 2))
        writer.commit()
    np.testing.assert_array_equal(SequenceFile(path).read(0).landmarks,
                                  np.arange(30).reshape(3, 5, 2))
    with h5py.File(path, "a") as h5:  # as written before the dataset existed
        del h5["landmarks"]
    clip = SequenceFile(path).read(0)
    assert clip.landmarks.shape == (3, 5, 2) and np.isnan(clip.landmarks).all()


# ----------------------------------------------------------- the framing

def test_framing_carries_the_crop_kind(aligned_file, tmp_path):
    framing = file_framing(SequenceFile(aligned_file))
    assert framing == Framing(margin=0.2, size=112, crop="aligned")
    assert framing.as_dict()["crop"] == "aligned"
    assert Framing.from_dict(framing.as_dict(), "x") == framing
    # Box framings are stored as before --crop existed (older versions read them).
    assert "crop" not in Framing(margin=0.2).as_dict()
    assert Framing.from_dict({"margin": 0.2}, "x").crop == "box"
    with pytest.raises(InputError, match="framing crop 'tilted' is not one of"):
        Framing.from_dict({"margin": 0.2, "crop": "tilted"}, "x")
    # Files of both kinds: no common framing.
    box = tmp_path / "box.h5"
    with SequenceWriter(box, 112, settings={"margin": 0.2}) as writer:  # a file from before --crop
        writer.begin_sequence("s")
        writer.append(np.zeros((1, 112, 112, 3), np.uint8), [0.0])
        writer.commit()
    assert file_framing(SequenceFile(box)).crop == "box"
    common, note = data_framing([SequenceFile(aligned_file), SequenceFile(box)])
    assert common is None and note.endswith(
        "margin 0.2 (MTCNN's five landmarks aligned on a face template, plus the margin), "
        f"{box} of margin 0.2 (MTCNN face boxes plus the margin)")


def test_framing_names_the_detector_that_made_the_crops(aligned_file, tmp_path):
    with h5py.File(aligned_file) as h5:  # generate records the pipeline's detector
        assert json.loads(h5.attrs["settings"])["face_detector"] == "mtcnn"
    assert file_framing(SequenceFile(aligned_file)).detector == "mtcnn"
    other = Framing(margin=0.2, detector="retinaface")
    assert other.as_dict()["detector"] == "retinaface"
    assert Framing.from_dict(other.as_dict(), "x") == other
    assert other.describe() == "margin 0.2 (RETINAFACE face boxes plus the margin)"
    assert not other.same_crops(Framing(margin=0.2))
    # MTCNN's framings are stored as before the detector was recorded.
    assert "detector" not in Framing(margin=0.2).as_dict()
    assert Framing.from_dict({"margin": 0.2}, "x").detector == "mtcnn"
    assert Framing(margin=0.0, source="whole-image").detector is None
    with pytest.raises(InputError, match="framing detector must be a name"):
        Framing.from_dict({"margin": 0.2, "detector": 3}, "x")


def test_resolve_face_settings_takes_the_crop_kind_from_the_framing():
    aligned = Framing(margin=0.2, crop="aligned")
    settings, line = resolve_face_settings({}, aligned)
    assert settings.crop == "aligned" and line == (
        "using the model's framing: margin 0.2 (MTCNN's five landmarks aligned on a face "
        "template, plus the margin); --margin (margin=) and --crop (crop=) override")
    settings, line = resolve_face_settings({"crop": "box", "margin": 0.3}, aligned)
    assert (settings.crop, settings.margin) == ("box", 0.3)
    assert line.startswith("margin 0.3, box crops as given; the model's framing is margin 0.2 (")
    settings, line = resolve_face_settings({"margin": 0.2}, aligned)  # crop from the framing
    assert settings.crop == "aligned" and line.startswith("using the model's framing")
    assert resolve_face_settings({"margin": 0.2, "crop": "aligned"}, aligned)[1] is None
    tight = Framing(margin=0.0, source="whole-image")
    settings, line = resolve_face_settings({"crop": "aligned"}, tight)
    assert (settings.crop, settings.margin) == ("aligned", 0.0)
    assert line.startswith("aligned crops as given; the model's framing is margin 0.0 (whole")
    assert resolve_face_settings({}, None)[0].crop == "box"


class StubFaces:
    """Stands in for FacePipeline (no MTCNN): a corner of each frame, a face in each."""

    def process(self, frames):
        n = len(frames)
        return FaceBatch(crops=np.ascontiguousarray(frames[:, :24, :24]),
                         boxes=np.zeros((n, 4), np.float32), found=np.ones(n, bool),
                         probs=np.ones(n, np.float32))

    def reset(self):
        pass


def test_predict_and_extract_crop_as_the_model_was_trained(tmp_path, monkeypatch):
    kinds = []

    def pipeline(settings, fps=None, size=None, device=None, faces=None):
        kinds.append(settings.crop)
        return StubFaces()
    monkeypatch.setattr(FacePipeline, "from_settings", pipeline)
    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=8, num_layers=1, input_size=24)
    model.framing = Framing(margin=0.2, size=24, crop="aligned")
    ckpt = save_checkpoint(model, tmp_path / "aligned.pt")
    runs = [["predict", str(SINGLE), "--model", str(ckpt), "--device", "cpu", "--no-plot",
             "--out", str(tmp_path / "p1")],
            ["predict", str(SINGLE), "--model", str(ckpt), "--device", "cpu", "--no-plot",
             "--out", str(tmp_path / "p2"), "--crop", "box"],
            ["extract", str(SINGLE), "--model", str(ckpt), "--device", "cpu",
             "--out", str(tmp_path / "e1")],
            ["extract", str(SINGLE), "--model", str(ckpt), "--device", "cpu",
             "--out", str(tmp_path / "e2"), "--crop", "box"]]
    outputs = []
    for args in runs:
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 0, done.output
        outputs.append(done.stdout.splitlines()[0])
    assert kinds == ["aligned", "box", "aligned", "box"]
    assert outputs[0] == outputs[2] == (
        "using the model's framing: margin 0.2 (MTCNN's five landmarks aligned on a face "
        "template, plus the margin); --margin (margin=) and --crop (crop=) override")
    assert outputs[1] == outputs[3] == (
        "box crops as given; the model's framing is margin 0.2 (MTCNN's five landmarks "
        "aligned on a face template, plus the margin)")
    with h5py.File(tmp_path / "e1" / "single_face.features.h5") as h5:
        assert json.loads(h5.attrs["face_settings"])["crop"] == "aligned"
