"""Track-guided detection (FacePipeline(detector="tracked"), the default)
against full per-frame detection, on the bundled clips (MTCNN, CPU)."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from end2you_visual.crops import FaceCropper
from end2you_visual.detectors import MTCNNDetector
from end2you_visual.errors import InputError
from end2you_visual.face_batch import empty_batch
from end2you_visual.faces import FaceBatch, FacePipeline, FaceSettings, resize_only
from end2you_visual.people import PeopleTracker
from end2you_visual.mtcnn import channels_last, refine_boxes
from end2you_visual.video import iter_frame_batches

DATA = Path(__file__).parent / "data"


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def decode_all(path):
    return np.concatenate([frames for _, frames in iter_frame_batches(path)])


def resized(frames, h, w):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def run(frames, batch_size=16, **kwargs):
    """Frames through one pipeline in batches; the rows and the pipeline."""
    pipeline = FacePipeline(fps=30, **kwargs)
    parts = [pipeline.process(frames[s:s + batch_size]) for s in range(0, len(frames), batch_size)]
    return FaceBatch(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("crops", "boxes", "found", "probs"))), pipeline


def iou(a, b):
    x1, y1 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x2, y2 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area - inter)


@pytest.fixture(scope="module")
def single_frames():
    return decode_all(DATA / "single_face.mp4")


@pytest.fixture(scope="module")
def spliced(single_frames):
    """single_face (72 frames) + no_face (first 40, resized to 640x360) +
    single_face again: cuts at frames 72 and 112."""
    no_face = resized(decode_all(DATA / "no_face.mp4")[:40], 360, 640)
    return np.concatenate([single_frames, no_face, single_frames])


def test_default_boxes_match_full_detection(single_frames):
    fast, pipeline = run(single_frames)
    full, reference = run(single_frames, detector="full")
    assert pipeline.settings.detector == "tracked" and reference.settings.detector == "full"
    np.testing.assert_array_equal(fast.found, full.found)
    assert fast.found.all()
    overlap = iou(fast.boxes, full.boxes)
    assert overlap.mean() >= 0.9 and overlap.min() >= 0.8
    # The point of it: most frames were refined by O-Net only (the first
    # frame and the refresh every 2 * 30 frames are full ones).
    assert reference.full_detections == 72
    assert pipeline.full_detections <= 3  # frames 0 and 60 here


def test_onet_refines_an_expected_box_onto_the_face(single_frames):
    # O-Net on a box near the face (MTCNN's own box moved by a tenth of its
    # size and 10 % too large) returns MTCNN's box and landmarks closely,
    # with a face's probability; on the same box over the background, a
    # low one.
    pipeline = FacePipeline()
    frames = single_frames[::12]
    detected = [pipeline.detect(f[None], landmarks=True)[0] for f in frames]
    truth = np.stack([boxes[0] for boxes, _, _ in detected])
    marks = np.stack([points[0] for _, _, points in detected])
    side = (truth[:, 2:] - truth[:, :2]).max(axis=1, keepdims=True)
    centre = (truth[:, :2] + truth[:, 2:]) / 2 + 0.1 * side
    near = np.concatenate([centre - 0.55 * side, centre + 0.55 * side], axis=1)
    boxes, probs, points = refine_boxes(frames, near, pipeline.mtcnn.onet)
    assert boxes.shape == (len(frames), 4) and points.shape == (len(frames), 5, 2)
    assert (probs > 0.95).all()
    assert iou(boxes, truth).min() >= 0.85
    assert np.abs(points - marks).max() <= 0.1 * side.min()
    away = near.copy()
    away[:, [0, 2]] = near[:, [0, 2]] - near[:, :1] + 5  # the left edge: background
    _, probs, _ = refine_boxes(frames, away, pipeline.mtcnn.onet)
    assert (probs < 0.5).all()


def test_channels_last_mtcnn_detects_as_before(single_frames):
    from facenet_pytorch import MTCNN

    plain = MTCNN(keep_all=True, post_process=False).eval()
    fast = channels_last(MTCNN(keep_all=True, post_process=False).eval())
    a, pa, la = plain.detect(single_frames[:4], landmarks=True)
    b, pb, lb = fast.detect(single_frames[:4], landmarks=True)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(b[i], np.float64), np.asarray(a[i], np.float64),
                                   atol=0.05)
        np.testing.assert_allclose(np.asarray(pb[i], np.float64), np.asarray(pa[i], np.float64),
                                   atol=1e-4)
        np.testing.assert_allclose(np.asarray(lb[i], np.float64), np.asarray(la[i], np.float64),
                                   atol=0.05)


def test_tracked_detection_does_not_depend_on_batches(single_frames):
    frames = single_frames[:24]
    a, _ = run(frames, batch_size=16)
    b, _ = run(frames, batch_size=5)
    np.testing.assert_array_equal(a.found, b.found)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)


def test_shot_cuts_are_found(spliced):
    pipeline = FacePipeline()
    cuts = np.concatenate([pipeline.tracker.cuts.find(spliced[s:s + 16]) for s in range(0, len(spliced), 16)])
    np.testing.assert_array_equal(np.flatnonzero(cuts), [72, 112])


def test_cut_marks_match_full_detection(spliced):
    fast, pipeline = run(spliced)
    full, _ = run(spliced, detector="full")
    # Face, no face, face: the marks are full detection's, the face after
    # the second cut is found on its first frame.
    np.testing.assert_array_equal(fast.found, full.found)
    assert fast.found[:72].all() and not fast.found[72:112].any() and fast.found[112:].all()
    assert iou(fast.boxes[fast.found], full.boxes[full.found]).mean() >= 0.9
    # fill="last": the no-face frames hold the last face crop, not a new one.
    assert (fast.crops[72:112] == fast.crops[71]).all()
    # In full: frame 0, the refresh at 60, the cut at 72 and the 39 no-face
    # frames after it, the cut at 112 and the refresh after it (172).
    assert pipeline.full_detections <= 46


def scene(face, place=None):
    """A grey 640x360 frame with the face pasted at (x, y, side)."""
    frame = np.full((360, 640, 3), 128, np.uint8)
    if place is not None:
        x, y, side = place
        frame[y:y + side, x:x + side] = resize_only(face[None], side)[0]
    return frame


def test_face_leaves_and_comes_back(single_frames):
    face = FacePipeline(size=200, margin=0.6).process_image(single_frames[0]).crops[0]
    places = [(60 + 6 * i, 100, 150) for i in range(10)] + [None] * 6 + \
             [(400, 120, 140)] * 8
    frames = np.stack([scene(face, p) for p in places])
    fast, _ = run(frames, batch_size=7, max_lost=3)
    full, _ = run(frames, batch_size=7, max_lost=3, detector="full")
    expected = np.array([p is not None for p in places])
    np.testing.assert_array_equal(full.found, expected)
    np.testing.assert_array_equal(fast.found, expected)
    assert iou(fast.boxes[expected], full.boxes[expected]).mean() >= 0.9
    centre = (fast.boxes[:, 0] + fast.boxes[:, 2]) / 2
    assert (centre[:10] < 250).all() and (centre[16:] > 400).all()


def test_detector_option():
    with pytest.raises(InputError, match="--detector"):
        FacePipeline(detector="fast")
    with pytest.raises(InputError, match="--detector"):
        FaceSettings(detector="fast")
    assert FaceSettings().detector == "tracked"
    assert FacePipeline.from_settings(FaceSettings(detector="full"), fps=25).settings.detector == "full"


# ------------------------- frames without a face cost less (issue 23, item 5)
@pytest.fixture(scope="module")
def face_then_none():
    return decode_all(DATA / "face_noface.mov")


def test_without_a_face_in_view_the_whole_frame_is_searched_every_k_frames(face_then_none):
    """face_noface.mov: a face, a cut at frame 75, 94 frames of cartoon. The
    tracked detector searches the frames without a face every 0.2 s (6
    frames), and its marks are full detection's."""
    fast, pipeline = run(face_then_none)
    full, _ = run(face_then_none, detector="full")
    assert pipeline.tracker.search_every == 6
    np.testing.assert_array_equal(fast.found, full.found)
    without = int((~full.found).sum())
    assert without >= 90
    # Before: every frame without a face was searched in full.
    assert pipeline.full_detections <= 5 + without // 6 + 2


def test_a_face_appearing_between_searches_is_found_from_its_first_frame(face_then_none):
    """The same clip reversed (no face, then a face from a cut on): the
    frames skipped since the last search are searched once a face is found
    (and the last frame of each call is searched), so the face is marked
    from the frame it appears in, as by full detection, wherever the
    searches and the batches fall."""
    reversed_clip = np.ascontiguousarray(face_then_none[::-1])
    for batch_size in (7, 50):
        fast, pipeline = run(reversed_clip, batch_size=batch_size)
        full, _ = run(reversed_clip, batch_size=batch_size, detector="full")
        np.testing.assert_array_equal(fast.found, full.found)
        assert pipeline.full_detections < len(reversed_clip) // 2


# ------------------- --faces main follows the same person as before (issue 23)
@pytest.mark.parametrize("clip", ["single_face.mp4", "face_noface.mov"])
def test_the_main_subject_is_followed_as_by_the_release_before(clip):
    """Boxes of the release before the multi-person work (0e2245f), stored
    in tests/data: the same frames found, mean IoU >= 0.95."""
    from end2you_visual.video import VideoFrames

    before = np.load(DATA / "boxes_before_issue23.npz")
    key = clip.replace(".", "_")
    video = VideoFrames(DATA / clip, 16)
    pipeline = FacePipeline(fps=video.info.fps, batch_size=16, size=16)
    parts = [pipeline.process(frames) for _, frames in video]
    found = np.concatenate([p.found for p in parts])
    boxes = np.concatenate([p.boxes for p in parts])
    np.testing.assert_array_equal(found, before[f"{key}__found"])
    assert iou(boxes[found], before[f"{key}__boxes"][found]).mean() >= 0.95


# ------------------------------- another detector is one class (issue 23, item 4)
class FixedBox:
    """A detector of one face at a fixed box in every frame, with the
    FaceDetector interface (end2you_visual.detectors)."""

    name = "fixed"
    box = np.array([200.0, 100.0, 300.0, 220.0], np.float32)

    def detect(self, frames):
        return [(self.box[None].copy(), np.ones(1, np.float32),
                 np.zeros((1, 5, 2), np.float32)) for _ in frames]

    def refine(self, frames, boxes):
        n = len(boxes)
        return (np.repeat(self.box[None], n, 0), np.full(n, 0.99, np.float32),
                np.zeros((n, 5, 2), np.float32))

    def check_frame_size(self, width, height, path=None):
        pass


def test_a_face_pipeline_runs_on_any_face_detector(single_frames):
    pipeline = FacePipeline(fps=30, smoothing=0)
    pipeline.face_detector = FixedBox()
    faces = pipeline.process(single_frames[:20])
    assert faces.found.all()
    np.testing.assert_allclose(faces.boxes, np.repeat(FixedBox.box[None], 20, 0), atol=1e-4)
    # Track-guided: only the first frame searched whole, the rest refined.
    assert pipeline.full_detections == 1


class TwoFixedFaces:
    """A stand-in tracker (a FaceTracker): two faces at fixed boxes, the
    second only on even frames."""

    full_detections = 0
    boxes = {0: np.array([10, 10, 40, 40], np.float32), 7: np.array([60, 20, 90, 50], np.float32)}

    def __init__(self):
        self.reset()

    def reset(self):
        self.start = 0

    def track(self, frames):
        n = len(frames)
        out = {}
        for face, box in self.boxes.items():
            batch = empty_batch(n, 0)
            rows = np.arange(n) if face == 0 else np.flatnonzero((self.start + np.arange(n)) % 2 == 0)
            batch.boxes[rows], batch.found[rows], batch.probs[rows] = box, True, 1.0
            out[face] = batch
        self.start += n
        return out


def test_the_pipeline_crops_what_any_tracker_follows():
    """The pipeline's parts are independent: a tracker of its own gives the
    faces, the pipeline's cropper cuts them (its settings) and fills each
    face's no-face rows with that face's last crop."""
    frames = np.random.default_rng(3).integers(0, 256, (5, 64, 100, 3), dtype=np.uint8)
    pipeline = FacePipeline(size=16, margin=0.0)
    pipeline.tracker = TwoFixedFaces()
    out = pipeline.track(frames)
    assert sorted(out) == [0, 7]
    cropper = FaceCropper(size=16, margin=0.0)
    for face, box in TwoFixedFaces.boxes.items():
        np.testing.assert_array_equal(out[face].crops[0], cropper.crop(frames[:1], box[None])[0])
    # frames 1 and 3 lack face 7: the crop of frames 0 and 2 before them
    np.testing.assert_array_equal(out[7].crops[1], out[7].crops[0])
    np.testing.assert_array_equal(out[7].crops[3], out[7].crops[2])
    assert not np.array_equal(out[7].crops[1], out[0].crops[1])
    assert pipeline.process(frames).found.all()  # the main subject: face 0


def test_each_part_is_built_from_its_slice_of_the_settings():
    settings = FaceSettings(size=48, margin=0.5, crop="aligned", fill="zeros", detect_every=2,
                            smoothing=0.25, detector="full", min_face_size=30, batch_size=4)
    for part, cls in (("cropper", FaceCropper), ("detector", MTCNNDetector)):
        assert set(settings.part(part)) <= set(inspect.signature(cls).parameters), part
    pipeline = FacePipeline.from_settings(settings, fps=25)
    assert (pipeline.cropper.size, pipeline.cropper.margin, pipeline.cropper.crop_kind,
            pipeline.cropper.fill) == (48, 0.5, "aligned", "zeros")
    assert (pipeline.face_detector.min_face_size, pipeline.face_detector.batch_size) == (30, 4)
    assert (pipeline.tracker.detect_every, pipeline.tracker.detector,
            pipeline.tracker.subject.smoothing) == (2, "full", 0.25)
    assert isinstance(FacePipeline(faces="all", fps=25).tracker, PeopleTracker)


@pytest.mark.parametrize("make", [lambda: FaceCropper(margin=-1), lambda: FacePipeline(margin=-1),
                                  lambda: FaceSettings(margin=-1)])
def test_a_setting_out_of_range_is_the_same_error_wherever_it_is_given(make):
    with pytest.raises(InputError, match=r"--margin: must be in \[0, 10\], got -1"):
        make()


def test_the_main_subject_and_every_person_have_their_own_calls():
    with pytest.raises(ValueError, match="track"):
        FacePipeline(faces="all").process(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="all"):
        FacePipeline().people()


@pytest.mark.parametrize("faces", ["main", "all"])
@pytest.mark.parametrize("setting, value", [("acquire_prob", 5), ("match_distance", -1),
                                            ("refresh_every", 0), ("search_every", -3)])
def test_both_trackers_check_their_settings_alike(faces, setting, value):
    with pytest.raises(InputError, match=setting):
        FacePipeline(faces=faces, **{setting: value})
