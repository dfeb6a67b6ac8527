"""Every person in a video (``--faces all``): composites made in the test
from real clips (issue 23). The bundled clips show one person; the real
two-person composites use ../shared/data/clips when it is there (CI has it)."""
from pathlib import Path

import numpy as np
import pytest

from end2you_visual.faces import FacePipeline
from end2you_visual.people import RELINK_SIMILARITY, appearance
from end2you_visual.video import iter_frame_batches, probe_video

DATA = Path(__file__).parent / "data"
CLIPS = Path(__file__).parents[1].parent / "shared" / "data" / "clips"

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def track(path, batch_size=16, **kwargs):
    """Run the people pipeline (faces="all") over a video: (people kept, {id: found (T,)},
    {id: boxes (T, 4)}, frames)."""
    info = probe_video(path)
    pipeline = FacePipeline(size=24, faces="all", fps=info.fps)
    found, boxes, frames = {}, {}, []
    for start, batch in iter_frame_batches(path, batch_size):
        frames.append(batch)
        for pid, faces in pipeline.track(batch).items():
            found.setdefault(pid, np.zeros((start, ), bool))
            boxes.setdefault(pid, np.full((start, 4), np.nan, np.float32))
            found[pid] = np.concatenate([found[pid], faces.found])
            boxes[pid] = np.concatenate([boxes[pid], faces.boxes])
    return pipeline.people(), found, boxes, np.concatenate(frames)


def iou(a, b):
    x1, y1 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x2, y2 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda c: (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def best_full_detection(frames, x0, x1):
    """MTCNN's most probable box in the columns [x0, x1) of each frame, in
    frame pixels."""

    detector = FacePipeline(size=8)
    boxes = []
    for b, _ in detector.detect(np.ascontiguousarray(frames[:, :, x0:x1])):
        boxes.append(b[0] + [x0, 0, x0, 0] if len(b) else np.full(4, np.nan))
    return np.stack(boxes)


# --------------------------------------------- bundled clips (always run)
@pytest.fixture(scope="module")
def same_person_twice(tmp_path_factory, side_by_side):
    """single_face.mp4 left and face_noface.mov right (the same man in two
    recordings; the right one cuts to a cartoon at 2.5 s)."""
    root = tmp_path_factory.mktemp("people")
    return side_by_side(DATA / "single_face.mp4", DATA / "face_noface.mov",
                                  root / "two.mp4", crops=(160, 220), frames=72, swap=72)


def test_two_faces_side_by_side_are_two_people_without_a_switch(same_person_twice):
    people, found, boxes, _ = track(same_person_twice)
    assert [p.id for p in people] == [1, 2]
    left, right = sorted(people, key=lambda p: p.mean_x)
    assert left.mean_x < 0.5 < right.mean_x
    for p in people:  # each stays on its own half in every frame it is found
        centres = (boxes[p.id][found[p.id], 0] + boxes[p.id][found[p.id], 2]) / 2
        assert ((centres < 320) == (p.mean_x < 0.5)).all()
        assert found[p.id].sum() >= 60


# ------------------------------------- real different people (../shared)
needs_clips = pytest.mark.skipif(not (CLIPS / "liveportrait_d6.mp4").is_file(),
                                 reason="../shared/data/clips not here")

PAIRS = [("WolfgangLanger_Pexels.mp4", "liveportrait_d6.mp4", (250, 0)),
         ("liveportrait_d0.mp4", "liveportrait_d10.mp4", (80, 80)),
         ("liveportrait_d3.mp4", "liveportrait_d14.mp4", (80, 80)),
         ("liveportrait_d19.mp4", "WolfgangLanger_Pexels.mp4", (80, 250))]


@needs_clips
@pytest.mark.parametrize("left, right, crops", PAIRS[:2])
def test_two_people_keep_their_ids_when_they_swap_sides_at_a_cut(tmp_path, side_by_side, left,
                                                                 right, crops):
    video = side_by_side(CLIPS / left, CLIPS / right, tmp_path / "swap.mp4", crops)
    people, found, boxes, frames = track(video)
    assert [p.id for p in people] == [1, 2]
    first = {p: np.nanmean(boxes[p][:60, [0, 2]]) < 320 for p in (1, 2)}  # left before the cut
    for p in (1, 2):
        assert found[p].sum() >= 110, found[p]
        centre = (boxes[p][:, 0] + boxes[p][:, 2]) / 2
        seen = found[p]
        # Before the cut on its side, after it on the other: no identity switch.
        assert ((centre[:60][seen[:60]] < 320) == first[p]).all()
        assert ((centre[60:][seen[60:]] < 320) != first[p]).all()
        # Its boxes against MTCNN's best box in its half, frame by frame
        # (0.85-0.95 on the four pairs; the 0.9 is not reached yet
        # on faces filling the frame: docs/benchmarks.md).
        halves = [(0, 320) if first[p] else (320, 640), (320, 640) if first[p] else (0, 320)]
        reference = np.concatenate([best_full_detection(frames[:60], *halves[0]),
                                    best_full_detection(frames[60:], *halves[1])])
        both = seen & np.isfinite(reference[:, 0])
        assert iou(boxes[p][both], reference[both]).mean() >= 0.85


@needs_clips
def test_appearance_tells_the_same_person_from_another():
    """The threshold sits between the same person's frames and another's."""
    def descriptors(name, crop):
        frames = np.concatenate([f for _, f in iter_frame_batches(CLIPS / name, 32)])[::20]

        detector = FacePipeline(size=8)
        out = []
        for frame, (b, _) in zip(frames, detector.detect(frames)):
            if len(b):
                out.append(appearance(frame, b[0]))
        return np.stack(out)

    a = descriptors("liveportrait_d0.mp4", None)
    b = descriptors("liveportrait_d10.mp4", None)
    same = (a @ a.T)[np.triu_indices(len(a), 1)]
    other = (a @ b.T).ravel()
    assert np.percentile(same, 5) > RELINK_SIMILARITY > other.max()


# ------------------------- leaving and coming back; a face for a few frames
@pytest.fixture(scope="module")
def away_and_back(tmp_path_factory, ffmpeg):
    """single_face.mp4 looped to 6 s at 25 fps, the face hidden (the frame
    black) from 2 s to 4 s: the person leaves the frame and comes back."""
    root = tmp_path_factory.mktemp("away")
    out = root / "away.mp4"
    ffmpeg("-stream_loop", "3", "-i", DATA / "single_face.mp4", "-vf",
           "fps=25,trim=end_frame=150,setpts=PTS-STARTPTS,"
           "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,50,99)'",
           "-an", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", out)
    return out


def test_a_person_away_for_two_seconds_comes_back_with_the_same_id(away_and_back):
    people, found, _, _ = track(away_and_back)
    assert [p.id for p in people] == [1]
    seen = found[1]
    assert seen[:50].sum() >= 45 and not seen[50:100].any() and seen[100:].sum() >= 45


def test_a_face_seen_for_a_few_frames_is_no_person(tmp_path, ffmpeg):
    """A face on screen for 5 frames (0.2 s) of 3 s: below min_duration."""
    out = tmp_path / "flash.mp4"
    ffmpeg("-i", DATA / "single_face.mp4", "-vf",
           "fps=25,trim=end_frame=60,setpts=PTS-STARTPTS,"
           "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='not(between(n,20,24))'",
           "-an", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", out)
    people, found, _, _ = track(out)
    assert people == []
    assert any(f[20:25].any() for f in found.values())  # it was seen, then dropped
