"""Face detection, tracking and cropping on the bundled clips (MTCNN, CPU)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from end2you_visual.faces import FaceBatch, FacePipeline, crop_image, resize_only
from end2you_visual.video import iter_frame_batches

DATA = Path(__file__).parent / "data"


def decode_all(path):
    return np.concatenate([frames for _, frames in iter_frame_batches(path)])


def run(path, batch_size=32, **kwargs):
    """The whole clip through one pipeline, batch by batch, rows concatenated."""
    pipeline = FacePipeline(**kwargs)
    parts = [pipeline.process(frames) for _, frames in iter_frame_batches(path, batch_size)]
    return FaceBatch(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("crops", "boxes", "found", "probs")))


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def single_frames():
    return decode_all(DATA / "single_face.mp4")


@pytest.fixture(scope="module")
def single():
    return run(DATA / "single_face.mp4", fps=30)


@pytest.fixture(scope="module")
def single_every3():
    # Batches of 7: detection frames and batch ends fall out of step.
    return run(DATA / "single_face.mp4", batch_size=7, fps=30, detect_every=3)


@pytest.fixture(scope="module")
def no_face():
    return run(DATA / "no_face.mp4", fps=24)


@pytest.fixture(scope="module")
def cut():
    # Downscaled detection keeps this 960x540 clip fast; the face is ~230 px.
    return run(DATA / "face_noface.mov", fps=30, detect_scale=0.5, min_face_size=40)


@pytest.fixture(scope="module")
def face_patch(single_frames):
    """A real face with some background around it, 200 x 200."""
    return FacePipeline(size=200, margin=0.6).process_image(single_frames[0]).crops[0]


def check_batch(faces, n, size=150):
    assert len(faces) == n
    assert faces.crops.shape == (n, size, size, 3) and faces.crops.dtype == np.uint8
    assert faces.boxes.shape == (n, 4) and faces.boxes.dtype == np.float32
    assert faces.found.shape == (n,) and faces.found.dtype == bool
    assert faces.probs.shape == (n,) and faces.probs.dtype == np.float32
    assert np.isnan(faces.boxes[~faces.found]).all()
    assert not np.isnan(faces.boxes[faces.found]).any()
    assert (faces.probs[~faces.found] == 0).all()


def test_single_face_found_in_nearly_every_frame(single):
    check_batch(single, 72)
    assert single.found.mean() >= 0.95
    boxes = single.boxes[single.found]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 640).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 360).all()
    widths = boxes[:, 2] - boxes[:, 0]
    assert (widths > 100).all() and (widths < 250).all()
    assert (single.probs[single.found] > 0.9).all()
    # Crops hold the picture, not padding.
    assert (single.crops[single.found].reshape(-1, 150 * 150 * 3).std(axis=1) > 20).all()


def test_no_face_clip_has_no_face(no_face):
    check_batch(no_face, 96)
    assert no_face.found.sum() == 0
    assert (no_face.crops == 0).all()  # fill="last" before any face: zeros


def test_cut_from_face_to_no_face(cut):
    check_batch(cut, 192)
    frames = decode_all(DATA / "face_noface.mov")
    cut_at = int(np.argmax(frames.reshape(192, -1).mean(axis=1) < 5))  # the black frame
    assert cut_at == 72
    assert cut.found[: cut_at - 2].mean() >= 0.95
    assert cut.found[cut_at + 2:].sum() == 0
    last = np.flatnonzero(cut.found)[-1]
    # fill="last": after the cut every crop repeats the last face crop.
    assert (cut.crops[last + 1:] == cut.crops[last]).all()


def test_detect_every_3_is_close_to_every_frame(single, single_every3):
    check_batch(single_every3, 72)
    both = single.found & single_every3.found
    assert both.sum() >= 0.95 * 72
    widths = single.boxes[both, 2] - single.boxes[both, 0]
    error = np.abs(single.boxes[both] - single_every3.boxes[both]).max(axis=1)
    assert (error / widths).max() < 0.1


def test_batch_boundaries_do_not_matter_with_every_frame_detection(single, single_frames):
    pipeline = FacePipeline(fps=30)
    parts = [pipeline.process(single_frames[s:s + 3]) for s in range(0, 12, 3)]
    boxes = np.concatenate([p.boxes for p in parts])
    np.testing.assert_allclose(boxes, single.boxes[:12], atol=0.05)


def test_detect_scale_gives_close_boxes(single_frames, single):
    faces = FacePipeline(detect_scale=0.5, smoothing=0).process(single_frames[:6])
    full = FacePipeline(smoothing=0).process(single_frames[:6])
    assert faces.found.all() and full.found.all()
    widths = full.boxes[:, 2] - full.boxes[:, 0]
    assert (np.abs(faces.boxes - full.boxes).max(axis=1) / widths).max() < 0.1


def test_smoothing_reduces_jitter(single, single_frames):
    raw = FacePipeline(smoothing=0).process(single_frames[:24])
    assert raw.found.all()

    def jitter(boxes):
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        return np.abs(np.diff(centres, n=2, axis=0)).mean()

    assert jitter(single.boxes[:24]) < 0.8 * jitter(raw.boxes)


# ----------------------------------------------------------------- tracking

def scene(face, a=(40, 100, 150), b=None):
    """A grey 640x360 frame with the face pasted at (x, y, side) a and b."""
    frame = np.full((360, 640, 3), 128, np.uint8)
    for place in (a, b):
        if place is not None:
            x, y, side = place
            frame[y:y + side, x:x + side] = resize_only(face[None], side)[0]
    return frame


def centre_x(boxes):
    return (boxes[:, 0] + boxes[:, 2]) / 2


def test_track_stays_on_its_subject(face_patch):
    # A large face A on the left; a small face B on the right that then
    # moves and grows until it is the larger one.
    b_places = [(420, 150, 90)] * 3 + [(420 - 20 * i, 150 - 10 * i, 90 + 20 * i) for i in range(1, 6)]
    frames = np.stack([scene(face_patch, b=place) for place in b_places])
    pipeline = FacePipeline(max_lost=2)
    faces = pipeline.process(frames)
    assert faces.found.all()
    assert (centre_x(faces.boxes) < 190).all()  # A spans x 40..190
    # The test can fail: on its own the last frame's most prominent face is B.
    alone = FacePipeline().process(frames[-1:])
    assert centre_x(alone.boxes)[0] > 320
    assert len(pipeline.detect(frames[-1:])[0][0]) == 2

    # A leaves: the track is lost for max_lost frames, then B is acquired.
    b_only = np.stack([scene(face_patch, a=None, b=b_places[-1])] * 4)
    after = pipeline.process(b_only)
    np.testing.assert_array_equal(after.found, [False, False, True, True])
    assert (centre_x(after.boxes[2:]) > 320).all()
    # fill="last": lost frames show A's last crop.
    assert (after.crops[:2] == faces.crops[-1]).all()


def test_fill_zeros_and_reset(face_patch):
    frames = np.stack([scene(face_patch), np.full((360, 640, 3), 128, np.uint8)])
    zeros = FacePipeline(fill="zeros").process(frames)
    np.testing.assert_array_equal(zeros.found, [True, False])
    assert zeros.crops[0].any() and not zeros.crops[1].any()

    pipeline = FacePipeline(fill="last")
    last = pipeline.process(frames)
    np.testing.assert_array_equal(last.crops[1], last.crops[0])
    pipeline.reset()
    fresh = pipeline.process(frames[1:])
    assert not fresh.found.any() and not fresh.crops.any()


def test_interpolated_frames_lie_between_detections(face_patch):
    # The face slides right by 10 px a frame; detect on frames 0, 4, 8.
    frames = np.stack([scene(face_patch, a=(40 + 10 * i, 100, 150)) for i in range(9)])
    faces = FacePipeline(detect_every=4, smoothing=0).process(frames)
    assert faces.found.all()
    x = centre_x(faces.boxes)
    np.testing.assert_allclose(x[1:4], x[0] + (x[4] - x[0]) * np.arange(1, 4) / 4, atol=1e-3)
    np.testing.assert_allclose(np.diff(x), 10, atol=3)


def test_fast_face_is_followed_between_sparse_detections(face_patch):
    # Face A crosses the frame at 25 px a frame (a quarter of its width),
    # i.e. 75 px between detections; face B stands still on the right.
    frames = np.stack([scene(face_patch, a=(10 + 25 * i, 100, 150), b=(480, 60, 120))
                       for i in range(12)])
    faces = FacePipeline(detect_every=3).process(frames)
    assert faces.found.all()
    x = centre_x(faces.boxes)
    assert (x < 460).all()  # never on B (x 480..600)
    # Smoothed yet without lag: within 10 px of the true motion.
    np.testing.assert_allclose(x - x[0], 25 * np.arange(12), atol=10)


# ----------------------------------------------------------------- cropping

def test_crop_cuts_the_exact_square():
    frame = np.random.default_rng(0).integers(0, 256, (1, 100, 120, 3), dtype=np.uint8)
    pipeline = FacePipeline(size=32, margin=0.0)
    # A 32 x 16 box: the square is 32 x 32 around its centre.
    crop = pipeline.crop(frame, [[20, 38, 52, 54]])
    np.testing.assert_array_equal(crop[0], frame[0, 30:62, 20:52])


def test_crop_pads_outside_the_frame_with_zeros():
    frame = np.random.default_rng(1).integers(1, 256, (1, 100, 120, 3), dtype=np.uint8)
    crop = FacePipeline(size=32, margin=0.0).crop(frame, [[-20, -20, 12, 12]])[0]
    assert (crop[:19, :] == 0).all() and (crop[:, :19] == 0).all()
    np.testing.assert_array_equal(crop[20:, 20:], frame[0, :12, :12])


def test_crop_averages_when_shrinking():
    # A one-pixel checkerboard shrunk 3x: averaging gives grey, point
    # sampling would give black and white.
    board = ((np.indices((96, 96)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frame = np.repeat(board[None, ..., None], 3, axis=3)
    crop = FacePipeline(size=32, margin=0.0).crop(frame, [[0, 0, 96, 96]])
    assert crop.min() >= 100 and crop.max() <= 160


def test_crop_reads_only_around_the_square_yet_equals_the_whole_frame_crop(single_frames):
    # Crops are cut from the pixels around each square only; roi_align on
    # the whole frame gives the same crop (to one grey level: float
    # rounding of the shifted coordinates), for squares inside, across the
    # edges of, and wholly outside the frame.
    from torchvision.ops import roi_align

    frames = single_frames[:6]
    h, w = frames.shape[1:3]
    boxes = np.array([[250, 60, 450, 260], [-80, -50, 60, 90], [580, 300, 700, 420],
                      [-300, 10, -150, 160], [100.3, 20.7, 110.9, 33.2], [0, 0, w, h]])
    pipeline = FacePipeline(size=64, margin=0.2)
    crops = pipeline.crop(frames, boxes)
    squares = torch.as_tensor(pipeline.square_boxes(boxes), dtype=torch.float32)
    rois = torch.cat([torch.arange(6, dtype=torch.float32)[:, None], squares], dim=1)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    whole = roi_align(x, rois, output_size=64, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    whole = whole.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    difference = np.abs(crops.astype(int) - whole.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    assert (crops[3] == 0).all()  # wholly outside: zeros
    assert crops[0].std() > 10  # a real crop


@pytest.mark.parametrize("size", [7, 48, 150])
def test_box_crops_are_roi_align_computed_axis_by_axis(size):
    # The crop weighs rows, then columns (crops.roi_align_weights); the
    # values are roi_align's to float rounding, for squares smaller and
    # larger than the output, across the frame's edges and outside it, on
    # an image of noise (every pixel differs from its neighbours).
    from torchvision.ops import roi_align

    rng = np.random.default_rng(size)
    frame = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    whole = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    pipeline = FacePipeline(size=size)
    for _ in range(60):
        side = rng.uniform(2, 300)
        x0, y0 = rng.uniform(-side - 5, 135), rng.uniform(-side - 5, 95)
        square = np.array([x0, y0, x0 + side, y0 + side], np.float32)
        roi = torch.from_numpy(np.concatenate([[0], square]).astype(np.float32))[None]
        expected = roi_align(whole, roi, output_size=size, spatial_scale=1.0, sampling_ratio=0,
                             aligned=True)[0]
        assert torch.allclose(pipeline.cropper._crop_one(frame, square), expected, atol=0.02), square


def test_crop_image_from_path(tmp_path, single_frames):
    path = tmp_path / "face.png"
    Image.fromarray(single_frames[10]).save(path)
    faces = crop_image(path, size=112)
    check_batch(faces, 1, size=112)
    assert faces.found[0] and faces.probs[0] > 0.9
    blank = crop_image(np.full((120, 160, 3), 200, np.uint8), size=112)
    assert not blank.found[0] and not blank.crops.any()


def test_resize_only():
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    out = resize_only(grey, 150)
    assert out.shape == (5, 150, 150, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(resize_only(grey[..., None], 150), out)
    np.testing.assert_array_equal(resize_only(grey, 48)[..., 0], grey)  # same size: unchanged
    flat = resize_only(np.full((2, 48, 48, 3), 77, np.uint8), 150)
    assert (flat == 77).all()
    # Non-square: zero-padded to a square, centred.
    wide = resize_only(np.full((1, 24, 48, 3), 255, np.uint8), 48)
    assert (wide[0, :12] == 0).all() and (wide[0, 12:36] == 255).all() and (wide[0, 36:] == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        FacePipeline(fill="mean")
    with pytest.raises(ValueError):
        FacePipeline(smoothing=1.0)
    pipeline = FacePipeline()
    with pytest.raises(ValueError, match="uint8"):
        pipeline.process(np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        pipeline.process(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        resize_only(np.zeros((2, 10, 10, 2), np.uint8))


# ------------------------------------ the same output whatever the threads (issue 24)
def test_the_pipeline_gives_the_same_faces_whatever_torch_s_thread_count(single):
    """Float sums split over threads round differently and the tracker
    amplified that into boxes pixels apart: the pipeline runs on one thread."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        three = run(DATA / "single_face.mp4", fps=30)
        assert torch.get_num_threads() == 3  # the caller's count, restored
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(three.boxes, single.boxes)
    np.testing.assert_array_equal(three.crops, single.crops)
