"""Audio: decoding, frame alignment by hand, `generate --audio`, and the readers."""
import json
import math
import subprocess
import wave
from pathlib import Path
from types import SimpleNamespace

import h5py
import imageio_ffmpeg
import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual import audio
from end2you_visual.cli.main import cli
from end2you_visual.data import SequenceFile, WindowDataset
from end2you_visual.errors import InputError
from end2you_visual.faces import FaceBatch, FacePipeline
from end2you_visual.generate import GenerateSettings, generate

DATA = Path(__file__).parent / "data"
RATE = 16000
FPS = 30
TONE_START = 0.25   # seconds: silence before, a 440 Hz tone after
TONE_HZ = 440.0
SECONDS = 1.0


def _ffmpeg(*args):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *map(str, args)],
                   check=True)


def _tone():
    """The int16 samples of the test's sound track at 16 kHz."""
    n = np.arange(int(SECONDS * RATE))
    wave_ = np.round(0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * n / RATE)).astype(np.int16)
    wave_[n < TONE_START * RATE] = 0
    return wave_


@pytest.fixture(scope="module")
def tone_video(tmp_path_factory):
    """A 1 s, 30 fps, 48x48 video whose lossless (PCM) track is the tone."""
    root = tmp_path_factory.mktemp("tone")
    with wave.open(str(root / "tone.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(_tone().tobytes())
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size=48x48:rate={FPS}:duration={SECONDS}",
            "-i", root / "tone.wav", "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4",
            "-c:a", "pcm_s16le", root / "tone.mkv")
    return root / "tone.mkv"


@pytest.fixture(scope="module")
def silent_video(tmp_path_factory):
    """single_face.mp4 without its audio track."""
    path = tmp_path_factory.mktemp("silent") / "silent.mp4"
    _ffmpeg("-i", DATA / "single_face.mp4", "-an", "-c:v", "copy", path)
    return path


class _NoDetector:
    """Stands in for the face pipeline (audio is what these tests check)."""

    face_detector = SimpleNamespace(name="none")  # what generate records of it

    def __init__(self, size):
        self.size = size

    def process(self, frames):
        n = len(frames)
        return FaceBatch(crops=np.full((n, self.size, self.size, 3), 7, np.uint8),
                         boxes=np.zeros((n, 4), np.float32), found=np.ones(n, bool),
                         probs=np.ones(n, np.float32))


@pytest.fixture
def no_detector(monkeypatch):
    monkeypatch.setattr(FacePipeline, "from_settings", lambda settings, fps=None, size=None,
                        device=None, faces=None: _NoDetector(settings.size))


def _by_hand(i, fps=FPS, rate=RATE):
    """Frame i's [start, stop) in samples, integer arithmetic: ceil(i * rate / fps)."""
    return -(-i * rate // fps), -(-(i + 1) * rate // fps)


# ------------------------------------------------------------------ alignment
def test_frame_ranges_by_hand():
    times = np.arange(6) / FPS
    ranges = audio.frame_ranges(times, FPS, RATE)
    assert ranges.tolist() == [[0, 534], [534, 1067], [1067, 1600], [1600, 2134],
                               [2134, 2667], [2667, 3200]]
    assert ranges.tolist() == [list(_by_hand(i)) for i in range(6)]
    assert audio.samples_per_frame(FPS, RATE) == 534
    assert audio.samples_per_frame(25, RATE) == 640
    # 0.1 s * 16000 is 1600.0000000000002 in floating point: still sample 1600.
    assert audio.frame_ranges([0.1], 25, RATE).tolist() == [[1600, 2240]]


def test_frame_windows_pad_past_the_range_and_the_track():
    wave_ = np.arange(10, dtype=np.float32)
    windows = audio.frame_windows(wave_, [[0, 3], [3, 5], [8, 12]], 4)
    assert windows.tolist() == [[0, 1, 2, 0], [3, 4, 0, 0], [8, 9, 0, 0]]


def test_decoded_tone_is_exact_and_starts_at_time_zero(tone_video):
    samples = audio.read_audio(tone_video, RATE)
    expected = _tone().astype(np.float32) / 32768
    assert samples.dtype == np.float32 and len(samples) == len(expected)
    np.testing.assert_array_equal(samples, expected)


def test_a_late_track_is_preceded_by_silence():
    # face_noface.mov's audio stream starts at 2.430023 s (its video at 0).
    samples = audio.read_audio(DATA / "face_noface.mov", 8000)
    onset = int(2.430023 * 8000)
    # Silence until the track starts (within 5 ms: the resampler's filter rings early).
    assert not np.any(samples[:onset - 40])
    assert np.count_nonzero(samples[onset + 40:onset + 840]) > 700
    assert abs(len(samples) - 6.40 * 8000) < 0.05 * 8000


def test_no_audio_track_is_an_input_error_naming_the_file(silent_video):
    assert audio.has_audio(DATA / "single_face.mp4")
    assert audio.has_audio(DATA / "face_noface.mov")
    assert not audio.has_audio(silent_video)
    with pytest.raises(InputError, match=r"silent\.mp4.*no audio track"):
        audio.read_audio(silent_video)


# ------------------------------------------------------------------- generate
def test_generate_audio_windows_hold_exactly_the_tone(tone_video, tmp_path, no_detector):
    (result,) = generate(tone_video, tmp_path / "out", GenerateSettings(size=8, audio="required"),
                         progress=False)
    assert result.status == "written", result.error
    assert result.frames == 30 and result.audio_found is True
    f = SequenceFile(result.output)
    assert f.has_audio and f.audio_rate == RATE and f.audio_samples() == 534
    clip = f.read(0, audio=True)
    assert clip.audio.shape == (30, 534) and clip.audio_found
    tone = _tone().astype(np.float32) / 32768
    for i in range(30):
        start, stop = _by_hand(i)
        expected = np.zeros(534, np.float32)
        expected[:stop - start] = tone[start:stop]
        np.testing.assert_array_equal(clip.audio[i], expected, err_msg=f"frame {i}")
    # Frame 7 (0.2333-0.2667 s) holds the onset: silence, then the tone.
    assert not clip.audio[7, :4000 - 3734].any() and clip.audio[7, 4000 - 3734 + 1] != 0
    with h5py.File(result.output) as h5:
        assert h5["audio/waveform"].shape == (16000,)
        assert h5["audio/offsets"][:].tolist() == [0, 16000]
        assert h5["audio/ranges"][3].tolist() == [1600, 2134]
        assert int(h5["audio"].attrs["rate"]) == RATE
    # A window of the reader past the first frame, and zero padding after the end.
    part = f.read(0, 28, 40, audio=True)
    assert part.audio.shape == (2, 534)
    np.testing.assert_array_equal(part.audio[1, :533], tone[15467:16000])


def test_generate_audio_on_a_real_clip_and_the_dataset(tmp_path, no_detector):
    settings = GenerateSettings(size=8, audio="required", audio_rate=8000)
    (result,) = generate(DATA / "single_face.mp4", tmp_path / "out", settings, progress=False)
    assert result.status == "written", result.error
    with h5py.File(result.output) as h5:
        assert abs(h5["audio/waveform"].shape[0] - 2.42 * 8000) < 0.02 * 8000
        assert h5["audio/ranges"][:4].tolist() == [list(_by_hand(i, 30, 8000)) for i in range(4)]
        assert json.loads(h5.attrs["settings"])["audio"] == "required"
    ds = WindowDataset([result.output], window=32, audio=True)
    item = ds[0]
    assert item["audio"].shape == (32, 267) and item["audio_found"].all()
    assert float(item["audio"].abs().max()) > 0.01
    # Visual-only readers see no change.
    assert "audio" not in WindowDataset([result.output], window=32)[0]
    # A re-run skips the complete file.
    (again,) = generate(DATA / "single_face.mp4", tmp_path / "out", settings, progress=False)
    assert again.status == "skipped" and again.audio_found is True


def test_generate_without_audio_track_fails_or_records_absence(silent_video, tmp_path,
                                                               no_detector):
    (failed,) = generate(silent_video, tmp_path / "a", GenerateSettings(size=8, audio="required"),
                         progress=False)
    assert failed.status == "failed" and "silent.mp4" in failed.error
    assert "no audio track" in failed.error
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["files"][0]["error"] == failed.error
    assert not list((tmp_path / "a").glob("*.h5*"))

    (written,) = generate(silent_video, tmp_path / "b",
                          GenerateSettings(size=8, audio="optional"), progress=False)
    assert written.status == "written" and written.audio_found is False
    f = SequenceFile(written.output)
    clip = f.read(0, 0, 5, audio=True)
    assert clip.audio_found is False and clip.audio.shape == (5, 534) and not clip.audio.any()
    with h5py.File(written.output) as h5:
        assert h5["audio/present"][:].tolist() == [False]
    (plain,) = generate(silent_video, tmp_path / "c", GenerateSettings(size=8), progress=False)
    assert plain.status == "written" and plain.audio_found is None
    with pytest.raises(InputError, match="holds no audio"):
        SequenceFile(plain.output).read(0, audio=True)


def test_audio_settings_are_range_checked():
    with pytest.raises(InputError, match="--audio-rate"):
        GenerateSettings(audio="required", audio_rate=500)
    with pytest.raises(InputError, match="--audio"):
        GenerateSettings(audio="sometimes")
    result = CliRunner().invoke(cli, ["generate", str(DATA / "single_face.mp4"), "--out", "x",
                                      "--audio", "required", "--audio-rate", "200000"])
    assert result.exit_code == 2 and "--audio-rate" in result.output


# ---------------------------------------------------------------- End2You files
def test_end2you_audiovisual_file_gives_each_frame_its_share(tmp_path):
    steps, per_step, samples = 4, 2, 1280
    rng = np.random.default_rng(0)
    sound = rng.standard_normal((steps, samples)).astype(np.float32)
    path = tmp_path / "e2y.hdf5"
    with h5py.File(path, "w") as h5:  # End2You's AudioVisualGenerator layout
        h5.create_dataset("audio", data=sound)
        h5.create_dataset("visual", data=rng.random((steps, per_step, 3, 8, 8), np.float32))
        h5.create_dataset("labels", data=rng.random((steps, 2), np.float32))
        h5.attrs["seq_num"] = steps
        h5.attrs["num_samples"] = [samples, per_step]
        h5.attrs["label_names"] = ["arousal", "valence"]
    f = SequenceFile(path, end2you_fps=50)
    assert f.has_audio and f.audio_rate == 32000 and f.audio_samples() == 640
    clip = f.read(0, 1, 7, audio=True)
    assert clip.audio.shape == (6, 640)
    for row, frame in enumerate(range(1, 7)):
        k, j = divmod(frame, per_step)
        np.testing.assert_array_equal(clip.audio[row], sound[k, j * 640:(j + 1) * 640])
    item = WindowDataset([path], window=8, audio=True)[0]
    np.testing.assert_array_equal(item["audio"][5].numpy(), sound[2, 640:])
    assert math.isnan(SequenceFile(path).audio_rate)


def test_a_failure_while_storing_audio_leaves_nothing_and_a_rerun_writes(tmp_path, no_detector,
                                                                         monkeypatch):
    import end2you_visual.generate as gen

    def broken(writer, path, rate):
        writer.append_audio(np.zeros(100, np.float32))
        raise InputError(path, "ffmpeg could not decode its audio track: test")

    settings = GenerateSettings(size=8, audio="required")
    monkeypatch.setattr(gen, "store_audio_track", broken)
    (failed,) = generate(DATA / "single_face.mp4", tmp_path, settings, progress=False)
    assert failed.status == "failed" and "could not decode its audio" in failed.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    monkeypatch.undo()
    monkeypatch.setattr(FacePipeline, "from_settings", lambda settings, fps=None, size=None,
                        device=None, faces=None: _NoDetector(settings.size))
    (again,) = generate(DATA / "single_face.mp4", tmp_path, settings, progress=False)
    assert again.status == "written" and SequenceFile(again.output).has_audio
