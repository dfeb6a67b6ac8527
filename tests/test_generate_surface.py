"""`generate`'s surface against bad input (issue 11): option ranges, truncated
videos, killed runs, a full disk, two runs into one folder, bad CSVs and
devices, unwritable outputs, and the contact sheet's legend."""
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from end2you_visual import generate as generate_module
from end2you_visual.cli.main import cli
from end2you_visual.data import find_files
from end2you_visual.errors import InputError
from end2you_visual.faces import FacePipeline
from end2you_visual.generate import GenerateSettings, generate, generate_video
from end2you_visual.hdf5 import is_complete
from end2you_visual.inputs import InputItem
from end2you_visual.locks import OutputLock
from end2you_visual.preview import FACE_COLOUR, NO_FACE_COLOUR, frame_tile
from end2you_visual.video import VideoFrames, iter_frame_batches, probe_video

DATA = Path(__file__).parent / "data"
TINY = dict(size=16, detect_every=10, batch_size=24)


def _labels_csv(path, duration, step=0.04):
    times = np.arange(0, duration + 1e-9, step)
    path.write_text("time,arousal\n" + "\n".join(f"{t:.2f},{t:.2f}" for t in times) + "\n")
    return path


def _run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --------------------------------------------------------------- 1. ranges
GENERATE_BAD = [("--size", "0"), ("--margin", "-1"), ("--batch-size", "0"),
                ("--detect-every", "0"), ("--detect-scale", "0"), ("--detect-scale", "1.5"),
                ("--min-face-size", "0"), ("--shard-size", "0"), ("--tolerance", "-0.5"),
                ("--workers", "0"), ("--image-fps", "0"), ("--num-shards", "0"),
                ("--shard-index", "-1")]


@pytest.mark.parametrize("option, value", GENERATE_BAD)
def test_generate_options_out_of_range_are_usage_errors(option, value, tmp_path):
    result = _run_cli("generate", DATA / "single_face.mp4", "--out", tmp_path / "o", option, value)
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option, value", [("--margin", "-1"), ("--detect-scale", "0"),
                                           ("--detect-scale", "2"), ("--min-face-size", "0")])
def test_predict_face_options_out_of_range_are_usage_errors(option, value, tmp_path):
    result = _run_cli("predict", DATA / "single_face.mp4", "--model", "resnet18-fer2013-cpu",
                      "--out", tmp_path / "o", option, value)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field, value, option", [
    ("size", 0, "--size"), ("size", 2.5, "--size"), ("margin", -1, "--margin"),
    ("margin", float("nan"), "--margin"), ("batch_size", 0, "--batch-size"),
    ("detect_every", 0, "--detect-every"), ("detect_scale", 0.0, "--detect-scale"),
    ("detect_scale", 1.5, "--detect-scale"), ("min_face_size", 0, "--min-face-size"),
    ("tolerance", -1, "--tolerance"), ("image_fps", 0, "--image-fps"),
    ("shard_size", 0, "--shard-size"), ("fill", "mean", "--fill"),
    ("align", "frames", "--align"), ("compression", "zip", "--compression")])
def test_generate_settings_check_their_ranges(field, value, option):
    with pytest.raises(InputError, match=f"^{option}: "):
        GenerateSettings(**{field: value})


def test_settings_changed_after_construction_are_checked_before_any_work(tmp_path):
    settings = GenerateSettings()
    settings.margin = -1
    with pytest.raises(InputError, match=r"^--margin: must be in \[0, 10\], got -1$"):
        generate(DATA / "single_face.mp4", tmp_path / "o", settings, progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="^--workers: "):
        generate(DATA / "single_face.mp4", tmp_path / "o", GenerateSettings(), workers=0,
                 progress=False)


@pytest.mark.parametrize("kwargs, option", [
    (dict(margin=-1), "--margin"), (dict(size=0), "--size"),
    (dict(detect_scale=0), "--detect-scale"), (dict(min_face_size=0), "--min-face-size"),
    (dict(detect_every=0), "--detect-every"), (dict(batch_size=0), "--batch-size"),
    (dict(device="gpu0"), "--device")])
def test_face_pipeline_checks_its_arguments(kwargs, option):
    with pytest.raises(InputError, match=f"^{option}: "):
        FacePipeline(**kwargs)


def test_face_pipeline_resolves_auto():
    pipeline = FacePipeline(size=8, device="auto")
    assert pipeline.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------- 2. a truncated video
@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """single_face.mp4 with its index first (faststart), cut at 30 % of its bytes."""
    import imageio_ffmpeg

    root = tmp_path_factory.mktemp("truncated")
    whole = root / "whole.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i",
                    str(DATA / "single_face.mp4"), "-c", "copy", "-movflags", "+faststart",
                    str(whole)], check=True)
    data = whole.read_bytes()
    cut = root / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.3)])
    whole.unlink()
    return cut


def test_video_frames_reports_a_video_that_ends_early(truncated):
    video = VideoFrames(truncated, batch_size=50)
    n = sum(len(frames) for _, frames in video)
    assert video.expected == 72 and video.decoded == n
    assert 0 < n < 72 and n == probe_video(truncated, count=True).n_frames
    assert video.ends_early and "partial file" in video.decode_error
    whole = VideoFrames(DATA / "single_face.mp4", batch_size=50)
    assert sum(len(frames) for _, frames in whole) == 72
    assert (whole.decoded, whole.expected, whole.ends_early, whole.decode_error) == \
        (72, 72, False, None)


def test_a_video_that_ends_early_is_recorded_and_warned_about(truncated, tmp_path):
    decoded = probe_video(truncated, count=True).n_frames
    with pytest.warns(UserWarning, match=rf"ends early: decoded {decoded} of 72 frames"):
        (result,) = generate(truncated, tmp_path / "out", GenerateSettings(**TINY),
                             progress=False)
    assert result.status == "written" and result.frames == decoded
    row = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]
    assert (row["decoded_frames"], row["expected_frames"]) == (decoded, 72)
    assert len(row["warnings"]) == 1 and str(truncated) in row["warnings"][0]
    assert "ends early" in row["warnings"][0]


def test_labels_of_a_video_that_ends_early_blame_the_video(truncated, tmp_path):
    decoded = probe_video(truncated, count=True).n_frames
    shutil.copy(truncated, tmp_path / "cut.mp4")
    _labels_csv(tmp_path / "cut.csv", 2.4)  # the whole clip's labels
    (result,) = generate(tmp_path / "cut.mp4", tmp_path / "out", GenerateSettings(**TINY),
                         progress=False)
    assert result.status == "failed"
    assert result.error.startswith(f"{tmp_path / 'cut.mp4'}: the video ends early "
                                   f"(decoded {decoded} of 72 frames")
    assert "right label file" not in result.error
    assert not list((tmp_path / "out").glob("*.h5*"))


def test_a_whole_video_records_its_frame_counts(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (result,) = generate(DATA / "single_face.mp4", tmp_path / "out",
                             GenerateSettings(**TINY), progress=False)
    assert (result.decoded_frames, result.expected_frames, result.warnings) == (72, 72, [])


# ---------------------------------------- 3. workers end with the run
def _session(sid):
    """Live processes of session ``sid`` (pid, command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(entry), command.strip()))
    return found


def _wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_end_with_the_run(sig, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(4):
        shutil.copy(DATA / "face_noface.mov", clips / f"clip{k}.mov")
    with open(tmp_path / "log.txt", "wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "end2you_visual.cli.main", "generate", str(clips), "--out",
             str(tmp_path / "out"), "--workers", "2", "--size", "16", "--detect-every", "10"],
            stdout=log, stderr=log, start_new_session=True)
    try:
        # Started: workers are decoding (their ffmpeg runs).
        busy = _wait_for(lambda: [p for p in _session(run.pid) if "ffmpeg" in p[1]], 300)
        assert busy, (tmp_path / "log.txt").read_text()[-2000:]
        os.kill(run.pid, sig)
        run.wait(60)
        left = _wait_for(lambda: not _session(run.pid), 60) or _session(run.pid)
        assert left is True, left
    finally:
        for pid, _ in _session(run.pid):
            os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
            run.wait()
    if sig == signal.SIGTERM:
        assert run.returncode == 128 + signal.SIGTERM


# --------------------------------------------------------- 4. a full disk
def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE")
def test_a_full_disk_fails_the_file_without_crashing(tmp_path):
    # Crops of 64 px: 72 x 64 x 64 x 3 = 885 kB, over the 300 kB allowed
    # (the manifest still fits). HDF5 used to leave the file open inside
    # the library and the interpreter crashed at exit (status -11).
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "end2you_visual.cli.main", "generate",
         str(DATA / "single_face.mp4"), "--out", str(out), "--size", "64",
         "--detect-every", "10"],
        preexec_fn=_limit_file_size(300_000), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, (run.returncode, run.stderr[-3000:])
    assert f"{out / 'single_face.h5'}: cannot be written: File too large" in run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    row = json.loads((out / "manifest.json").read_text())["files"][0]
    assert row["status"] == "failed" and "File too large" in row["error"]


WRITE_PAST_THE_LIMIT = """
import numpy as np
from end2you_visual.hdf5 import SequenceWriter
try:
    with SequenceWriter("x.h5", 64) as writer:
        writer.begin_sequence("a")
        for _ in range(8):  # flushed every 256 rows: the second flush fails
            writer.append(np.ones((128, 64, 64, 3), np.uint8), np.arange(128))
        writer.commit()
except OSError as err:
    print(err.errno, err.filename)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE")
def test_a_failed_write_mid_file_raises_an_oserror_naming_the_file(tmp_path):
    run = subprocess.run([sys.executable, "-c", WRITE_PAST_THE_LIMIT], cwd=tmp_path,
                         preexec_fn=_limit_file_size(4_000_000), capture_output=True, text=True,
                         timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"{errno.EFBIG} x.h5.partial\n", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["flush", "commit"])
def test_a_write_error_closes_and_removes_the_partial_file(method, tmp_path, monkeypatch):
    from end2you_visual.hdf5 import SequenceWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SequenceWriter, method, full)
    (result,) = generate(DATA / "single_face.mp4", tmp_path / "out",
                         GenerateSettings(**TINY), progress=False)
    assert result.status == "failed"
    assert result.error.startswith(f"{tmp_path / 'out' / 'single_face.h5'}: cannot be written: "
                                   "No space left on device")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json"]


# -------------------------------------------- 5. two runs into one folder
def test_an_output_another_run_writes_is_waited_for_not_taken(tmp_path, monkeypatch):
    out = tmp_path / "out"
    target = out / "single_face.h5"
    other_run = OutputLock(target).acquire()  # another process is writing it
    real_run_jobs = generate_module._run_jobs

    def other_run_finishes_first(jobs, settings, workers, progress, overwrite=False, wait=True):
        if wait:  # this run comes back for the outputs it found busy
            item = InputItem("single_face", "video", DATA / "single_face.mp4")
            generate_video(item, target, GenerateSettings(size=8, detect_every=10))
            other_run.release()
        return real_run_jobs(jobs, settings, workers, progress, overwrite, wait)

    monkeypatch.setattr(generate_module, "_run_jobs", other_run_finishes_first)
    with pytest.warns(UserWarning, match=rf"single_face.h5: another process \(pid {os.getpid()}\)"
                                         " is writing this output; waiting"):
        (result,) = generate(DATA / "single_face.mp4", out, GenerateSettings(**TINY),
                             progress=False)
    # Complete on disk, written by the other run: skipped here, with its numbers.
    assert (result.status, result.frames, result.sequences, result.error) == \
        ("skipped", 72, 1, None)
    with h5py.File(target, "r") as h5:
        assert h5.attrs["frame_size"] == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"] == {"written": 0, "skipped": 1, "failed": 0}
    assert not list(out.glob(".*lock")) and not list(out.glob("*.partial"))


def test_an_output_another_run_gave_up_is_written(tmp_path, monkeypatch):
    out = tmp_path / "out"
    other_run = OutputLock(out / "single_face.h5").acquire()
    real_run_jobs = generate_module._run_jobs

    def other_run_fails(jobs, settings, workers, progress, overwrite=False, wait=True):
        if wait:
            other_run.release()
        return real_run_jobs(jobs, settings, workers, progress, overwrite, wait)

    monkeypatch.setattr(generate_module, "_run_jobs", other_run_fails)
    with pytest.warns(UserWarning, match="another process"):
        (result,) = generate(DATA / "single_face.mp4", out, GenerateSettings(**TINY),
                             progress=False)
    assert (result.status, result.frames) == ("written", 72)
    assert is_complete(out / "single_face.h5")


def test_output_lock_names_its_owner(tmp_path):
    from end2you_visual.locks import OutputBusy

    with OutputLock(tmp_path / "a.h5"):
        with pytest.raises(OutputBusy, match=rf"a.h5: another process \(pid {os.getpid()}\) "
                                             "is writing this output"):
            OutputLock(tmp_path / "a.h5", wait=False).acquire()
        with OutputLock(tmp_path / "b.h5", wait=False):  # other outputs are free
            pass
    with OutputLock(tmp_path / "a.h5", wait=False):  # released
        pass
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ 6. bad inputs, one line each
@pytest.mark.parametrize("content, problem", [
    ("", "is empty"), ("raw_file,label_file\n", "lists no files"),
    ("video,labels\nclip.mp4,\n", "has no 'raw_file' column")])
def test_bad_input_csv_is_one_error_line(content, problem, tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text(content)
    result = _run_cli("generate", csv, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {csv}: {problem}")
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu", "gpu0"])
def test_unusable_device_is_one_error_line_before_any_work(device, tmp_path):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    result = _run_cli("generate", DATA / "single_face.mp4", "--out", tmp_path / "o",
                      "--device", device)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: --device: '{device}'")
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    missing = tmp_path / "missing.mp4"  # would be a failed input, if work started
    csv = tmp_path / "in.csv"
    csv.write_text(f"raw_file,label_file\n{missing},\n")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(InputError, match=f"^{out}: the output folder \\(--out\\)"):
            generate(csv, out, GenerateSettings(), progress=False)
        result = _run_cli("generate", csv, "--out", out)
        assert result.exit_code == 1 and result.output.startswith(f"Error: {out}: ")
        assert "Traceback" not in result.output
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(InputError, match="cannot be written"):
            generate(DATA / "single_face.mp4", tmp_path / "ro", GenerateSettings(),
                     progress=False)
    finally:
        (tmp_path / "ro").chmod(0o755)


# ------------------------------------ 7. messages name paths, skipped counts
def test_no_hdf5_files_names_where_it_looked(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match=rf"^{tmp_path / 'a'}, {tmp_path / 'b'}: no HDF5 files"):
        find_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match=rf"^{tmp_path / 'a'}: no HDF5 files \(\*.h5, \*.hdf5\) "
                                         "found in this folder"):
        find_files(str(tmp_path / "a"))


def test_skipped_files_keep_their_numbers(tmp_path):
    settings = GenerateSettings(**TINY)
    (first,) = generate(DATA / "single_face.mp4", tmp_path / "out", settings, progress=False)
    (again,) = generate(DATA / "single_face.mp4", tmp_path / "out", settings, progress=False)
    assert again.status == "skipped"
    assert (again.frames, again.faces_found, again.sequences, again.fps) == \
        (72, first.faces_found, 1, 30.0)
    assert first.faces_found > 0
    row = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]
    assert (row["status"], row["frames"], row["faces_found"]) == ("skipped", 72, first.faces_found)


# --------------------------------------------------------- 8. contact sheets
def test_contact_sheet_shows_no_face_frames_and_a_legend(tmp_path):
    generate(DATA / "no_face.mp4", tmp_path / "out", GenerateSettings(size=32, detect_every=10),
             preview=True, progress=False)
    sheet = np.asarray(Image.open(tmp_path / "out" / "previews" / "no_face.png").convert("RGB"))
    _, first = next(iter_frame_batches(DATA / "no_face.mp4", 1))
    cell = 32 + 6
    # The first tile: a red border around the frame itself, not a black fill.
    assert (sheet[0, 0] == NO_FACE_COLOUR).all()
    assert (sheet[cell - 1, cell - 1] == NO_FACE_COLOUR).all()
    np.testing.assert_array_equal(sheet[3:35, 3:35], frame_tile(first[0], 32))
    assert sheet[3:35, 3:35].std() > 10
    # The legend under the three rows of eight tiles: a green and a red swatch.
    legend_top = 3 * (cell + 12) + 2
    assert (sheet[legend_top + 5, 7] == FACE_COLOUR).all()
    assert (sheet[legend_top + 14 + 5, 7] == NO_FACE_COLOUR).all()


def test_frame_tile_keeps_the_aspect():
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, :20] = 200
    tile = frame_tile(frame, 10)
    assert tile.shape == (10, 10, 3)
    assert (tile[:2] == 0).all() and (tile[8:] == 0).all()  # letterboxed
    assert (tile[3:7, :4] == 200).all() and (tile[3:7, 6:] == 0).all()


def test_generate_and_predict_take_their_face_options_from_one_definition():
    import dataclasses

    from end2you_visual.cli.main import cli
    from end2you_visual.faces import FaceSettings
    from end2you_visual.framing import FRAMED_SETTINGS
    from end2you_visual.generate import GenerateSettings

    def options(command):
        return {p.name: (p.default, str(p.type), p.help) for p in cli.commands[command].params}

    generate_opts, predict_opts = options("generate"), options("predict")
    fields = {f.name: f for f in dataclasses.fields(FaceSettings)}
    for name, f in fields.items():
        assert generate_opts[name] == (f.default, generate_opts[name][1], f.metadata["help"])
        if name in FRAMED_SETTINGS:  # predict: not given (None) means the model's framing
            default, kind, text = generate_opts[name]
            assert predict_opts[name] == (None, kind, text)
            shown = next(p for p in cli.commands["predict"].params if p.name == name)
            assert shown.show_default == ("the model's framing, as its training crops were "
                                          f"cut; else {default}")
        elif name not in ("size", "device"):  # predict: the model's size, its --device
            assert predict_opts[name] == generate_opts[name], name
    assert set(FRAMED_SETTINGS) == {"margin", "crop"}
    assert generate_opts["smoothing"][1] == "<FloatRange 0<=x<1>"
    assert {f.name for f in dataclasses.fields(GenerateSettings)} >= set(fields)
    with pytest.raises(InputError, match=r"^--smoothing: must be in \[0, 1\), got 1"):
        FaceSettings(smoothing=1)
    assert FacePipeline.from_settings(FaceSettings(margin=0.5), fps=25, size=48).settings.margin == 0.5


# ------------------------------------------- a decoder killed mid-video (issue 24)
def test_a_killed_decoder_fails_the_video_and_a_rerun_redoes_it(tmp_path, monkeypatch):
    from end2you_visual import video as video_module

    real_popen = subprocess.Popen
    decoders = []

    def popen(command, *args, **kwargs):
        proc = real_popen(command, *args, **kwargs)
        if "-nostdin" in command and "rawvideo" in command:
            decoders.append(proc)
        return proc

    real_prefetch = video_module._Prefetcher.__iter__

    def kill_after_first_batch(self):
        for k, frames in enumerate(real_prefetch(self)):
            if k == 0:  # at most 3 batches of 8 of the 72 frames read by now
                decoders[-1].kill()  # as the out-of-memory killer would
            yield frames

    monkeypatch.setattr(video_module.subprocess, "Popen", popen)
    monkeypatch.setattr(video_module._Prefetcher, "__iter__", kill_after_first_batch)
    out = tmp_path / "out"
    (result,) = generate(DATA / "single_face.mp4", out,
                         GenerateSettings(**{**TINY, "batch_size": 8}), progress=False)
    assert result.status == "failed"
    assert "the decoder (ffmpeg) was killed (SIGKILL)" in result.error
    assert str(DATA / "single_face.mp4") in result.error
    assert not is_complete(out / "single_face.h5") and not list(out.glob("*.h5*"))
    monkeypatch.undo()
    (again,) = generate(DATA / "single_face.mp4", out, GenerateSettings(**TINY), progress=False)
    assert again.status == "written" and again.frames == 72


def test_a_portrait_phone_clip_finds_its_faces(tmp_path):
    """single_face.mp4 stored as a phone stores portrait video: pixels turned
    a quarter and a display matrix turning them back. Decoded as displayed,
    its faces are found as in the original."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    turned, phone = tmp_path / "turned.mp4", tmp_path / "phone.mp4"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(DATA / "single_face.mp4"),
                    "-an", "-vf", "transpose=1", "-c:v", "libx264", "-crf", "12", str(turned)],
                   check=True)
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-display_rotation", "90", "-i",
                    str(turned), "-c", "copy", str(phone)], check=True)
    settings = GenerateSettings(size=16, batch_size=24)
    (original,) = generate(DATA / "single_face.mp4", tmp_path / "a", settings, progress=False)
    (rotated,) = generate(phone, tmp_path / "b", settings, progress=False)
    assert rotated.frames == 72 and rotated.faces_found >= original.faces_found - 2
    assert original.faces_found >= 60


# ------------------------------------------- a really full disk (issue 24)
def _generate_cli(videos, out, size):
    return subprocess.run(
        [sys.executable, "-m", "end2you_visual.cli.main", "generate", str(videos), "--out",
         str(out), "--size", str(size), "--detect-every", "10", "--preview"],
        capture_output=True, text=True, timeout=600)


def test_a_disk_that_fills_up_fails_only_the_file_that_did_not_fit(small_disk, tmp_path):
    disk = small_disk(600)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("single_face.mp4", "face_noface.mov"):
        shutil.copy(DATA / name, videos / name)
    out = disk / "out"
    run = _generate_cli(videos, out, 40)  # 476 kB fit, 169 frames more do not
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert f"{out / 'face_noface.h5'}: cannot be written: No space left on device" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "previews",
                                                     "single_face.h5"]
    files = {Path(r["output"]).name: r for r in
             json.loads((out / "manifest.json").read_text())["files"]}
    assert files["single_face.h5"]["status"] == "written" and is_complete(out / "single_face.h5")
    assert files["face_noface.h5"]["status"] == "failed"


def test_a_full_disk_says_in_one_line_that_the_manifest_cannot_be_written(small_disk):
    out = small_disk(600, full=True, folders=["out"]) / "out"
    run = _generate_cli(DATA / "single_face.mp4", out, 40)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"Error: {out / 'manifest.json'}: cannot be written: No space left on device; 0 of 1 "
        "outputs are complete on disk and kept, the others were removed; free some space "
        "and run again (complete outputs are skipped)")
    assert "Traceback" not in run.stderr
    assert list(out.iterdir()) == []  # no partial file, no lock file


# ------------------------------ in-range options that crashed (issue 24)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """single_face.mp4 scaled to 176x99 (a low-resolution clip)."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("small") / "small.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i",
                    str(DATA / "single_face.mp4"), "-vf", "scale=176:-2", str(path)], check=True)
    return path


@pytest.mark.parametrize("option, value, problem", [
    ("--min-face-size", "500", "--min-face-size 500 is larger than its 176x100 frames: no face "
                               "can be found; use a smaller one"),
    ("--detect-scale", "0.05", "--detect-scale 0.05 shrinks its 176x100 frames to 5 px on their "
                               "short side, smaller than the faces searched for (12 px: MTCNN's "
                               "smallest window is 12 px); use a larger --detect-scale or none"),
])
def test_options_that_leave_nothing_to_search_fail_the_video_clearly(small_video, tmp_path,
                                                                     option, value, problem):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["generate", str(small_video), "--out", str(out), "--size",
                                   "16", option, value])
    assert res.exit_code == 1, res.output
    assert f"FAILED {small_video}: {small_video}: {problem}" in res.output
    assert "Traceback" not in res.output and "torch.cat" not in res.output


def test_the_pipeline_refuses_frames_it_cannot_search_with_an_input_error():
    frames = np.zeros((2, 60, 80, 3), np.uint8)
    with pytest.raises(InputError, match=r"^frames: --min-face-size 100 is larger than its "
                                         r"80x60 frames"):
        FacePipeline(size=8, min_face_size=100).process(frames)


@pytest.mark.parametrize("option, value, message", [
    ("--margin", "1e6", "Invalid value for '--margin': 1000000.0 is not in the range 0<=x<=10."),
    ("--size", "100000", "Invalid value for '--size': 100000 is not in the range 1<=x<=2048."),
    ("--batch-size", "100000",
     "Invalid value for '--batch-size': 100000 is not in the range 1<=x<=4096."),
])
def test_options_that_grow_memory_have_upper_bounds(tmp_path, option, value, message):
    res = CliRunner().invoke(cli, ["generate", str(DATA / "single_face.mp4"), "--out",
                                   str(tmp_path / "o"), option, value])
    assert res.exit_code == 2 and message in res.output, res.output
    with pytest.raises(InputError, match=f"^{option}: must be in"):
        GenerateSettings(**{option[2:].replace("-", "_"): float(value)})


def test_a_video_name_too_long_for_the_file_system_fails_alone_before_any_work(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_name = "v" * 250 + ".mp4"
    shutil.copy(DATA / "single_face.mp4", videos / long_name)
    shutil.copy(DATA / "single_face.mp4", videos / "short.mp4")
    results = {Path(r.output).name: r for r in
               generate(videos, tmp_path / "out", GenerateSettings(**TINY), progress=False)}
    short, long_one = results["short.h5"], results["v" * 250 + ".h5"]
    assert short.status == "written"
    assert long_one.status == "failed" and long_one.error.startswith(str(videos / long_name))
    assert "255" in long_one.error and long_one.decoded_frames in (0, None)
