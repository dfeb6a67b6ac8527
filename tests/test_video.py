"""Video probing, streaming decoding and image reading, on the bundled clips."""

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from end2you_visual import video
from end2you_visual.errors import InputError
from end2you_visual.video import VideoInfo, iter_frame_batches, probe_video, read_image

DATA = Path(__file__).parent / "data"
SINGLE = DATA / "single_face.mp4"
NO_FACE = DATA / "no_face.mp4"
CUT = DATA / "face_noface.mov"


def decode_all(path, batch_size=32):
    return np.concatenate([frames for _, frames in iter_frame_batches(path, batch_size)])


def ffmpeg(*args):
    from moviepy.config import FFMPEG_BINARY

    subprocess.run([FFMPEG_BINARY, "-y", "-loglevel", "error", *map(str, args)], check=True)


@pytest.mark.parametrize(
    "path, fps, width, height, header_frames, decoded_frames",
    [
        (SINGLE, 30.0, 640, 360, 72, 72),
        # Constant 24 fps; the header's average rate reads 23.67 (container
        # duration 3.95 s vs 4.0 s of video), so the base rate is used. The
        # last picture lasts until 4.0 s, hence 96 frames for 95 pictures.
        (NO_FACE, 24.0, 960, 540, 94, 96),
        # Variable rate: 75 pictures at 30 fps, then 94 at 24 fps (169 in
        # all, average 26.4 fps); sampled at 30 fps over 6.4 s.
        (CUT, 30.0, 960, 540, 192, 192),
    ],
)
def test_probe_values(path, fps, width, height, header_frames, decoded_frames):
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert info.path == str(path)
    assert info.fps == fps
    assert (info.width, info.height) == (width, height)
    assert info.n_frames == header_frames
    assert info.n_frames == int(info.duration * info.fps)
    assert probe_video(path, count=True).n_frames == decoded_frames
    assert len(decode_all(path)) == decoded_frames


def test_single_face_duration():
    assert probe_video(SINGLE).duration == pytest.approx(2.42)


def test_batches_stream_in_order_whatever_the_batch_size():
    seen = []
    for start, frames in iter_frame_batches(SINGLE, batch_size=7):
        assert start == sum(len(f) for f in seen)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (360, 640, 3)
        assert 1 <= len(frames) <= 7
        seen.append(frames)
    assert [len(f) for f in seen] == [7] * 10 + [2]
    small = np.concatenate(seen)
    big = decode_all(SINGLE, batch_size=32)
    np.testing.assert_array_equal(small, big)
    # Consecutive frames of a real video differ: nothing is repeated or stuck.
    assert all((big[i] != big[i - 1]).any() for i in range(1, len(big)))


def test_constant_rate_frames_match_moviepy():
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(SINGLE), audio=False)
    try:
        reference = np.stack([clip.get_frame(i / clip.fps) for i in (0, 1, 35, 71)])
    finally:
        clip.close()
    frames = decode_all(SINGLE)
    np.testing.assert_array_equal(frames[[0, 1, 35, 71]], reference)


def test_variable_rate_video_is_sampled_at_constant_rate():
    frames = decode_all(CUT)
    repeated = [i for i in range(1, len(frames)) if np.array_equal(frames[i], frames[i - 1])]
    # Every one of the 169 pictures appears; in the 24 fps part every 5th
    # frame repeats the previous picture (24 -> 30 fps); the 30 fps part
    # (pictures 0-74) has no repeat.
    assert len(frames) - len(repeated) == 169
    assert repeated[0] == 79 and np.all(np.diff(repeated) == 5)
    # The cut: picture 72 (t = 2.4 s) is black.
    assert frames[72].mean() < 5 and frames[71].mean() > 50 and frames[73].mean() > 50


def test_header_longer_than_video_is_not_trusted(tmp_path):
    # A 4 s audio track next to the 2.4 s video: the container says 4 s, so
    # the header estimate is 120 frames; only 72 exist.
    audio = tmp_path / "long.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000 * 4, np.int16).tobytes())
    muxed = tmp_path / "long.mov"
    ffmpeg("-i", SINGLE, "-i", audio, "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "pcm_s16le", muxed)
    info = probe_video(muxed)
    assert info.n_frames == 120
    assert probe_video(muxed, count=True).n_frames == 72
    np.testing.assert_array_equal(decode_all(muxed, batch_size=50), decode_all(SINGLE))


def test_iterator_ends_ffmpeg_when_abandoned(monkeypatch):
    started = record_decoders(monkeypatch)
    batches = iter_frame_batches(CUT, batch_size=4)
    start, frames = next(batches)
    assert start == 0 and len(frames) == 4
    assert len(started) == 1 and started[0].poll() is None  # still decoding
    batches.close()
    assert started[0].returncode is not None
    assert started[0].stdout.closed


def record_decoders(monkeypatch):
    """The list that the ffmpeg decoding processes started from now on are
    appended to (ours, not moviepy's probes)."""
    started = []
    real_popen = video.subprocess.Popen

    def recording_popen(command, *args, **kwargs):
        proc = real_popen(command, *args, **kwargs)
        if "-nostdin" in command and "rawvideo" in command:
            started.append(proc)
        return proc

    monkeypatch.setattr(video.subprocess, "Popen", recording_popen)
    return started


def test_corrupt_file_raises_input_error_naming_it(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as err:
        probe_video(bad)
    assert str(bad) in str(err.value)
    assert err.value.path == str(bad)
    with pytest.raises(InputError, match="x.mp4"):
        next(iter_frame_batches(bad))


def test_missing_file_and_audio_only_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        probe_video(tmp_path / "absent.mp4")
    audio = tmp_path / "sound.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    with pytest.raises(InputError, match="no video stream"):
        probe_video(audio)


def test_bad_batch_size():
    with pytest.raises(ValueError):
        next(iter_frame_batches(SINGLE, batch_size=0))


def test_read_image_converts_to_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)

    rgba = np.dstack([rgb, np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "absent.png")
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="fake.png"):
        read_image(fake)


# ------------------------------------------------- phone videos: display rotation
@pytest.fixture(scope="module")
def portrait_phone_clip(tmp_path_factory):
    """single_face.mp4 as a phone stores a clip: the pixels turned a quarter
    clockwise (360 x 640 coded) and a display matrix of 90 degrees that
    turns them upright again when shown (640 x 360 displayed)."""
    root = tmp_path_factory.mktemp("phone")
    turned, phone = root / "turned.mp4", root / "phone.mp4"
    ffmpeg("-i", SINGLE, "-an", "-vf", "transpose=1", "-c:v", "libx264", "-crf", "12", turned)
    ffmpeg("-display_rotation", "90", "-i", turned, "-c", "copy", phone)
    return phone


def test_a_phone_clip_is_decoded_at_its_displayed_size_and_orientation(portrait_phone_clip):
    info = probe_video(portrait_phone_clip)
    assert (info.width, info.height, info.rotation) == (640, 360, 90)
    frames = decode_all(portrait_phone_clip)
    assert frames.shape == (72, 360, 640, 3)
    # The same pictures as the upright original, to the re-encoding's loss
    # (squashed or sideways frames differ by 40 grey levels and more).
    difference = np.abs(frames.astype(np.int16) - decode_all(SINGLE).astype(np.int16))
    assert difference.mean() < 4


def test_a_clip_without_rotation_reports_none():
    assert probe_video(SINGLE).rotation == 0


@pytest.mark.parametrize("degrees, expected", [(180, 180), (270, 270), (-90, 270)])
def test_display_rotations_of_half_and_three_quarter_turns(tmp_path, degrees, expected):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", degrees, "-i", SINGLE, "-c", "copy", rotated)
    info = probe_video(rotated)
    assert info.rotation == expected
    size = (640, 360) if expected == 180 else (360, 640)
    assert (info.width, info.height) == size
    first = next(iter(iter_frame_batches(rotated, 4)))[1]
    assert first.shape == (4, size[1], size[0], 3)


# --------------------------------------------- a decoder that dies mid-video
def test_a_decoder_killed_mid_video_is_an_error_not_a_short_video(monkeypatch):
    started = record_decoders(monkeypatch)
    frames = video.VideoFrames(SINGLE, batch_size=8)
    got = 0
    with pytest.raises(InputError, match=r"single_face\.mp4: the decoder \(ffmpeg\) was "
                                         r"killed \(SIGKILL\) after \d+ frames"):
        for _, batch in frames:
            got += len(batch)
            started[0].kill()
    assert got < 72


def test_stopping_early_is_not_an_abnormal_end():
    batches = iter_frame_batches(SINGLE, 8)
    _, batch = next(batches)
    assert len(batch) == 8
    # Closing the generator kills ffmpeg ourselves: no error (an exception on
    # close propagates from close(), where a for loop's break would only warn).
    batches.close()
