"""`generate` end to end on the bundled real clips, bad inputs, resume and the CLI."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from end2you_visual.cli.main import cli
from end2you_visual.data import SequenceFile
from end2you_visual.errors import InputError
from end2you_visual.generate import GenerateSettings, generate
from end2you_visual.hdf5 import is_complete

DATA = Path(__file__).parent / "data"
FAST = dict(size=32, detect_every=3, batch_size=24)


def _labels_csv(path, duration, step=0.04):
    times = np.arange(0, duration + 1e-9, step)
    rows = "\n".join(f"{t:.2f},{t:.2f},{-t:.2f}" for t in times)
    path.write_text("time,arousal,valence\n" + rows + "\n")
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A folder with the single-face clip, labels at 40 ms, and the bad inputs."""
    root = tmp_path_factory.mktemp("inputs")
    shutil.copy(DATA / "single_face.mp4", root / "single_face.mp4")
    _labels_csv(root / "single_face.csv", 2.4)
    (root / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    shutil.copy(DATA / "single_face.mp4", root / "nan_times.mp4")
    (root / "nan_times.csv").write_text("time,arousal\n0,0.1\nnan,0.2\n0.08,0.3\n")
    shutil.copy(DATA / "single_face.mp4", root / "short_labels.mp4")
    _labels_csv(root / "short_labels.csv", 0.4)  # labels end 2 s before the video
    (root / "input.csv").write_text(
        "raw_file,label_file,subject\n"
        "single_face.mp4,single_face.csv,s1\n"
        "corrupt.mp4,,s2\n"
        "nan_times.mp4,nan_times.csv,s3\n"
        "short_labels.mp4,short_labels.csv,s4\n"
        "single_face.mp4,missing.csv,s5\n"
    )
    return root


@pytest.fixture(scope="module")
def generated(clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    results = generate(clip_dir / "input.csv", out, GenerateSettings(**FAST), preview=True,
                       progress=False)
    return out, results


def test_good_video_is_written_with_aligned_labels(generated):
    out, _ = generated
    f = SequenceFile(out / "single_face.h5")
    assert f.label_names == ["arousal", "valence"]
    assert f.label_kind == "continuous"
    (seq,) = f.sequences
    assert seq.length == 72 and seq.fps == 30.0
    assert seq.metadata == {"subject": "s1"}
    clip = f.read(0)
    assert clip.frames.shape == (72, 32, 32, 3)
    # Frame i is at i/30 s; with `previous`, it takes the last 40 ms row at or
    # before it: frame 2 (0.0667 s) -> row 0.04; frame 3 (0.1 s) -> row 0.08;
    # frame 6 (0.2 s) -> row 0.20 exactly; frame 71 (2.3667 s) -> row 2.36.
    assert clip.labels[[0, 1, 2, 3, 6, 71], 0] == pytest.approx([0, 0, 0.04, 0.08, 0.2, 2.36])
    np.testing.assert_allclose(clip.labels[:, 1], -clip.labels[:, 0])
    np.testing.assert_allclose(clip.timestamps, np.arange(72) / 30)
    assert clip.face_found.mean() >= 0.95
    assert np.isfinite(clip.boxes[clip.face_found]).all()


def test_bad_inputs_are_reported_and_others_still_written(generated):
    out, results = generated
    manifest = json.loads((out / "manifest.json").read_text())
    by_output = {Path(r["output"]).stem: r for r in manifest["files"]}
    assert by_output["single_face"]["status"] == "written"
    assert by_output["single_face"]["frames"] == 72
    for name, problem in (("corrupt", "corrupt.mp4"), ("nan_times", "row"),
                          ("short_labels", "short_labels.csv")):
        assert by_output[name]["status"] == "failed", name
        assert problem in by_output[name]["error"], by_output[name]["error"]
        assert not (out / f"{name}.h5").exists()
    missing = [r for r in manifest["files"] if "missing.csv" in (r["error"] or "")]
    assert len(missing) == 1 and missing[0]["status"] == "failed"
    assert manifest["totals"] == {"written": 1, "skipped": 0, "failed": 4}
    assert list(out.glob("*.partial")) == []


def test_preview_is_a_png(generated):
    out, _ = generated
    image = Image.open(out / "previews" / "single_face.png")
    assert image.format == "PNG" and image.width > 32


def test_rerun_skips_complete_and_redoes_unfinished(clip_dir, tmp_path):
    settings = GenerateSettings(**FAST)
    csv = tmp_path / "one.csv"
    csv.write_text(f"raw_file,label_file\n{clip_dir / 'single_face.mp4'},\n"
                   f"{DATA / 'no_face.mp4'},\n")
    generate(csv, tmp_path / "out", settings, progress=False)
    done = tmp_path / "out" / "single_face.h5"
    before = done.stat().st_mtime_ns
    # A killed run leaves no_face.h5 only as a partial file.
    (tmp_path / "out" / "no_face.h5").rename(tmp_path / "out" / "no_face.h5.partial")
    results = generate(csv, tmp_path / "out", settings, progress=False)
    status = {Path(r.output).stem: r.status for r in results}
    assert status == {"single_face": "skipped", "no_face": "written"}
    assert done.stat().st_mtime_ns == before
    assert is_complete(tmp_path / "out" / "no_face.h5")
    assert not (tmp_path / "out" / "no_face.h5.partial").exists()
    f = SequenceFile(tmp_path / "out" / "no_face.h5")
    assert f.label_names == [] and f.read(0).labels.shape == (96, 0)
    assert not f.read(0).face_found.any()


def test_align_labels_keeps_one_frame_per_label_row(clip_dir, tmp_path):
    csv = tmp_path / "in.csv"
    labels = tmp_path / "l.csv"
    # Labels every 1/30 s on a 30 fps video: End2You kept int(30 * 1/30) = 0 frames.
    times = np.arange(72) / 30
    labels.write_text("time,happy\n" + "\n".join(f"{t:.6f},{k % 2}" for k, t in enumerate(times)))
    csv.write_text(f"raw_file,label_file\n{clip_dir / 'single_face.mp4'},{labels}\n")
    generate(csv, tmp_path / "out", GenerateSettings(align="labels", **FAST), progress=False)
    f = SequenceFile(tmp_path / "out" / "single_face.h5")
    assert f.label_kind == "multilabel"
    clip = f.read(0)
    assert len(clip.frames) == 72
    assert clip.labels[:4, 0].tolist() == [0, 1, 0, 1]


def test_image_classes_pack_into_shards(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("angry", 3), ("happy", 4)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 48), np.uint8)).save(
                tmp_path / "imgs" / cls / f"{k}.png")
    settings = GenerateSettings(size=24, skip_detection=True, shard_size=5)
    results = generate(tmp_path / "imgs", tmp_path / "out", settings, progress=False)
    assert [r.status for r in results] == ["written", "written"]
    shards = sorted((tmp_path / "out").glob("images-*.h5"))
    assert len(shards) == 2
    files = [SequenceFile(p) for p in shards]
    assert [len(f.sequences) for f in files] == [5, 2]
    assert files[0].label_names == ["angry", "happy"] and files[0].label_kind == "multiclass"
    labels = np.concatenate([f.read(s).labels for f in files for s in range(len(f.sequences))])
    assert labels.tolist() == [[1, 0]] * 3 + [[0, 1]] * 4
    clip = files[0].read(0)
    assert clip.frames.shape == (1, 24, 24, 3)
    # Grey images become RGB with equal channels.
    assert (clip.frames[..., 0] == clip.frames[..., 2]).all()


def ck_folder(root):
    """A CK+-style image-classes folder: the subject in the file names."""
    rng = np.random.default_rng(0)
    for cls, names in (("angry", ["S010_004_01.png", "S011_002_05.png"]),
                       ("happy", ["S010_006_03.png", "S012_001_02.png", "x.png"])):
        (root / cls).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(root / cls / name)
    return root


def test_subject_pattern_records_a_subject_per_image_and_train_splits_by_it(tmp_path):
    from end2you_visual.training.split import split_sequences

    folder = ck_folder(tmp_path / "ck")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["generate", str(folder), "--out", str(out), "--size", "8",
                                      "--skip-detection", "--subject-pattern",
                                      r"(?P<subject>S\d{3})_"])
    assert result.exit_code == 0, result.output
    (shard,) = sorted(out.glob("images-*.h5"))
    f = SequenceFile(shard)
    assert [s.metadata.get("subject") for s in f.sequences] == ["S010", "S011", "S010", "S012",
                                                                 None]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["subjects"] == {"known": 4, "unknown": 1, "pattern": r"(?P<subject>S\d{3})_"}
    split = split_sequences([f], split_by="subject", fraction=0.34, seed=0)
    subject = {(str(f.path), s.index): s.metadata.get("subject") for s in f.sequences}
    held = {subject[k] for k in split.valid}
    assert held and not held & {subject[k] for k in split.train}


def test_the_manifest_says_when_no_subject_is_known(tmp_path):
    folder = ck_folder(tmp_path / "ck")
    generate(folder, tmp_path / "out", GenerateSettings(size=8, skip_detection=True),
             progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["subjects"]["known"] == 0 and manifest["subjects"]["unknown"] == 5
    assert manifest["subjects"]["note"].startswith("no subject is known")
    with pytest.raises(InputError, match=r"^--subject-pattern: not a regular expression"):
        GenerateSettings(subject_pattern="S(")


def test_cli_exit_status_says_something_failed(clip_dir, tmp_path):
    runner = CliRunner()
    csv = tmp_path / "in.csv"
    csv.write_text(f"raw_file,label_file\n{clip_dir / 'corrupt.mp4'},\n")
    result = runner.invoke(cli, ["generate", str(csv), "--out", str(tmp_path / "o"),
                                 "--size", "32"])
    assert result.exit_code == 1
    assert "corrupt.mp4" in result.output
    assert "0 written" in result.output


def test_cli_help_and_version():
    runner = CliRunner()
    assert runner.invoke(cli, ["--version"]).output.startswith("e2y-visual, version")
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "generate" in result.output


def test_frames_beyond_the_header_count_keep_their_labels(tmp_path):
    # no_face.mp4's header says 94 frames at 24 fps; 96 decode. Every decoded
    # frame gets a row. Frame 95 is at 3.9583 s; the 3.96 s row lies 1.7 ms
    # after it, within 5 % of a frame period (2.08 ms), so it counts as "at".
    csv = tmp_path / "in.csv"
    labels = _labels_csv(tmp_path / "l.csv", 3.96)
    csv.write_text(f"raw_file,label_file\n{DATA / 'no_face.mp4'},{labels}\n")
    (result,) = generate(csv, tmp_path / "out", GenerateSettings(**FAST), progress=False)
    assert result.status == "written" and result.frames == 96
    clip = SequenceFile(tmp_path / "out" / "no_face.h5").read(0)
    assert clip.labels[95, 0] == pytest.approx(3.96)
    assert clip.labels[94, 0] == pytest.approx(3.88)  # 3.9167 s -> the 3.88 s row
    assert clip.timestamps[95] == pytest.approx(95 / 24)


def test_shards_split_the_work_between_machines(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(
            tmp_path / "imgs" / "a" / f"{k}.png")
    settings = GenerateSettings(size=8, skip_detection=True, shard_size=2)
    outputs = []
    for index in (0, 1):
        results = generate(tmp_path / "imgs", tmp_path / "out", settings, num_shards=2,
                           shard_index=index, progress=False)
        outputs.append({Path(r.output).name for r in results})
        assert (tmp_path / "out" / f"manifest-shard{index}of2.json").exists()
    # Three output files, split between the two machines without overlap.
    assert outputs == [{"images-00000.h5", "images-00002.h5"}, {"images-00001.h5"}]


def test_a_longer_audio_track_does_not_fail_the_labels(tmp_path):
    # The container says 4 s (its audio); the video is 2.4 s (72 frames) and
    # its labels cover 2.4 s. The coverage check must use the decoded frames.
    import subprocess
    import wave

    import imageio_ffmpeg

    audio = tmp_path / "long.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(8000 * 4, np.int16).tobytes())
    video = tmp_path / "talk.mov"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-i", str(DATA / "single_face.mp4"), "-i", str(audio), "-map", "0:v",
                    "-map", "1:a", "-c:v", "copy", "-c:a", "pcm_s16le", str(video)], check=True)
    labels = _labels_csv(tmp_path / "talk.csv", 2.4)
    (result,) = generate(tmp_path, tmp_path / "out", GenerateSettings(**FAST), layout="videos",
                         progress=False)
    assert result.status == "written", result.error
    assert result.frames == 72
    # Labels that really end early are still refused, after decoding.
    _labels_csv(labels, 0.8)
    (result,) = generate(tmp_path, tmp_path / "out", GenerateSettings(**FAST), layout="videos",
                         overwrite=True, progress=False)
    assert result.status == "failed" and "talk.csv" in result.error
    assert not list((tmp_path / "out").glob("*.partial"))


def test_generate_gives_the_same_crops_whatever_the_worker_count(tmp_path):
    """Two videos with one worker (the run's two torch threads) and with two
    (one thread each): bit for bit the same files' contents."""
    import h5py
    import torch

    for name in ("single_face.mp4", "face_noface.mov"):
        shutil.copy(Path(__file__).parent / "data" / name, tmp_path / name)
    settings = GenerateSettings(size=24, batch_size=24)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generate(tmp_path, tmp_path / "one", settings, workers=1, progress=False)
        generate(tmp_path, tmp_path / "two", settings, workers=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in ("single_face.h5", "face_noface.h5"):
        with h5py.File(tmp_path / "one" / name) as a, h5py.File(tmp_path / "two" / name) as b:
            assert len(_datasets(a)) >= 4
            for key in _datasets(a):
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=f"{name}:{key}")


def _datasets(group):
    names = []
    group.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    return names
