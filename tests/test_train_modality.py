"""`train --modality audio|audiovisual`: audio windows beside the frames,
the fusion model trained, resumed bit for bit, initialised from a visual
model (its CNN copied, kept fixed with ``freeze_visual``), and clear errors
for data without audio."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.models import build_model, load_checkpoint, save_checkpoint
from end2you_visual.training import train

SIZE, RATE, FPS = 16, 16000, 25.0
PER_FRAME = int(RATE / FPS)  # 640 samples per frame
TINY = dict(arch="resnet_tiny", hidden_size=8, num_layers=1, num_workers=0, progress=False,
            tensorboard=False, lr=1e-3, window=6, batch_size=2, seed=0)

pytestmark = pytest.mark.usefixtures("one_thread")


def write_av(write_sequences, path, lengths, audio=True, fps=FPS, seed=0):
    """Sequences whose arousal is the loudness of each frame's audio and whose
    valence is the frames' brightness (each learnable from one modality)."""
    loudness = {}

    def rows(q, n, rng):
        loud, bright = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
        frames = rng.integers(0, 40, (n, SIZE, SIZE, 3)) + bright[:, None, None, None] * 200
        loudness[q] = loud
        return frames.astype(np.uint8), np.stack([loud, bright], 1)

    def noise(q, n, rng):
        per_frame = int(RATE / fps)
        samples = rng.uniform(-1, 1, (n, per_frame)) * loudness[q][:, None]
        return samples.reshape(-1).astype(np.float32)

    return write_sequences(path, lengths, rows, names=["arousal", "valence"],
                           kind="continuous", size=SIZE, seed=seed, fps=fps,
                           source="s{}.mp4".format, audio=noise if audio else None,
                           audio_rate=RATE if audio else None)


@pytest.fixture(scope="module")
def av_file(tmp_path_factory, write_sequences):
    return write_av(write_sequences, tmp_path_factory.mktemp("av") / "av.h5",
                    [14, 12, 13, 11, 12])


@pytest.mark.parametrize("modality", ["audio", "audiovisual"])
def test_a_model_of_each_modality_trains_and_is_saved_as_one(av_file, tmp_path, modality):
    result = train(train=[str(av_file)], out_dir=str(tmp_path / "run"), epochs=2,
                   modality=modality, projection=4 if modality == "audiovisual" else 0, **TINY)
    assert result.epochs_run == 2
    model = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model.config["modality"] == modality
    assert model.config["audio_rate"] == RATE
    assert ("input_size" in model.config) == (modality == "audiovisual")
    if modality == "audiovisual":
        assert model.config["projection"] == 4 and model.config["input_size"] == SIZE
    audio = torch.zeros(1, 3, PER_FRAME)
    frames = torch.zeros(1, 3, SIZE, SIZE, 3, dtype=torch.uint8)
    out = model(audio) if modality == "audio" else model(frames, audio)
    assert out.shape == (1, 3, 2)


def test_the_loader_gives_each_frame_its_own_audio_window(av_file):
    from end2you_visual.data import WindowDataset
    from end2you_visual.training.loader import WindowBatches

    ds = WindowDataset([av_file], window=6, audio=True)
    batch = WindowBatches(ds)[[0, 1]]
    for k in range(2):
        item = ds[k]
        assert torch.equal(batch["audio"][k], item["audio"])
        assert torch.equal(batch["frames"][k], item["frames"])
    assert batch["audio"].shape == (2, 6, PER_FRAME)
    # Loudness = arousal: each window's peak is at most its frame's label.
    peak = batch["audio"].abs().amax(-1)
    assert (peak <= batch["labels"][..., 0] + 1e-6).all()
    assert (peak > 0.9 * batch["labels"][..., 0]).all()



def test_an_audiovisual_run_resumes_bit_for_bit(av_file, resume_after_kill):
    _, _, weights = resume_after_kill(("train_loss", "valid_loss"), train=[str(av_file)],
                                      modality="audiovisual", dropout=0.2, **TINY)
    assert any(k.startswith("audio.") for k in weights)
    assert any(k.startswith("visual.") for k in weights)


def test_resume_refuses_another_modality(av_file, tmp_path):
    common = dict(train=[str(av_file)], out_dir=str(tmp_path / "run"), **TINY)
    train(epochs=1, modality="audiovisual", **common)
    with pytest.raises(InputError, match="modality"):
        train(epochs=2, modality="audio", resume=True, **common)


def test_init_from_a_visual_model_fills_the_visual_branch_and_freeze_keeps_it(av_file,
                                                                               tmp_path):
    torch.manual_seed(3)
    visual = build_model(arch="resnet_tiny", temporal="none", outputs=7, head="multiclass",
                         input_size=SIZE)
    save_checkpoint(visual, tmp_path / "visual.pt")
    train(train=[str(av_file)], out_dir=str(tmp_path / "run"), epochs=2,
          modality="audiovisual", init=str(tmp_path / "visual.pt"), freeze_visual=True, **TINY)
    model = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model.config["freeze_visual"] is True and model.config["outputs"] == 2
    source = visual.state_dict()
    fused = model.state_dict()
    cnn = [k for k in source if k.startswith("extractor.")]
    assert cnn and any("running_mean" in k for k in cnn)
    for k in cnn:  # weights and batch-norm statistics unchanged by training
        assert torch.equal(fused["visual." + k], source[k]), k


def test_init_from_a_visual_model_without_freezing_trains_it(av_file, tmp_path):
    torch.manual_seed(3)
    visual = build_model(arch="resnet_tiny", temporal="none", outputs=7, head="multiclass",
                         input_size=SIZE)
    save_checkpoint(visual, tmp_path / "visual.pt")
    train(train=[str(av_file)], out_dir=str(tmp_path / "run"), epochs=1,
          modality="audiovisual", init=str(tmp_path / "visual.pt"), **TINY)
    fused = load_checkpoint(tmp_path / "run" / "last.pt").state_dict()
    key = "extractor.conv1.weight"
    assert not torch.equal(fused["visual." + key], visual.state_dict()[key])


def test_files_without_audio_are_named(tmp_path, write_sequences):
    silent = write_av(write_sequences, tmp_path / "silent.h5", [12, 12, 12], audio=False)
    with pytest.raises(InputError, match="silent.h5.*holds no audio.*--audio"):
        train(train=[str(silent)], out_dir=str(tmp_path / "run"), epochs=1,
              modality="audiovisual", **TINY)


def test_files_of_other_frame_rates_in_one_training_set_are_refused(tmp_path, write_sequences):
    # 25 and 20 fps: audio windows of 640 and 800 samples at 16 kHz, both
    # files in the training set (the validation split alone would not tell).
    write_av(write_sequences, tmp_path / "data" / "a25.h5", [12, 12, 12])
    write_av(write_sequences, tmp_path / "data" / "b20.h5", [12, 12, 12], fps=20.0, seed=1)
    with pytest.raises(InputError, match=r"audio windows of different lengths \[640, 800\]"):
        train(train=[str(tmp_path / "data")], out_dir=str(tmp_path / "run"), epochs=1,
              modality="audiovisual", **TINY)


def test_an_audio_run_cannot_start_from_a_visual_model(av_file, tmp_path):
    save_checkpoint(build_model(arch="resnet_tiny", outputs=2), tmp_path / "visual.pt")
    with pytest.raises(InputError, match="visual model; a audio run"):
        train(train=[str(av_file)], out_dir=str(tmp_path / "run"), epochs=1,
              modality="audio", init=str(tmp_path / "visual.pt"), **TINY)


def test_cli_modality_options_and_their_ranges(av_file, tmp_path):
    runner = CliRunner()
    args = ["train", str(av_file), "--arch", "resnet_tiny", "--hidden-size", "8",
            "--num-layers", "1", "--num-workers", "0", "--window", "6", "--batch-size", "2",
            "--epochs", "1", "--no-progress"]
    bad = runner.invoke(cli, args + ["--out", str(tmp_path / "a"), "--modality", "audiovisual",
                                     "--projection", "-1"])
    assert bad.exit_code == 2 and "--projection" in bad.output
    bad = runner.invoke(cli, args + ["--out", str(tmp_path / "b"), "--modality", "smell"])
    assert bad.exit_code == 2 and "smell" in bad.output
    ok = runner.invoke(cli, args + ["--out", str(tmp_path / "c"), "--modality", "audiovisual",
                                    "--projection", "4", "--freeze-visual"])
    assert ok.exit_code == 0, ok.output
    assert "audiovisual resnet_tiny / lstm" in ok.output
    assert load_checkpoint(tmp_path / "c" / "best.pt").config["freeze_visual"] is True


# ------------------------------------------------------------------ test

def _whole(model, seqfile, info):
    clip = seqfile.read(info, 0, info.length, audio=True)
    frames = torch.from_numpy(clip.frames)[None]
    audio = torch.from_numpy(clip.audio)[None]
    with torch.no_grad():
        out = model(audio) if model.config["modality"] == "audio" else model(frames, audio)
    return model.activate(out)[0].numpy()


@pytest.mark.parametrize("modality", ["audio", "audiovisual"])
def test_windows_with_carried_state_equal_one_pass(av_file, modality):
    from end2you_visual.data import SequenceFile
    from end2you_visual.inference import predict_sequences

    torch.manual_seed(0)
    kw = dict(arch="resnet_tiny", input_size=SIZE) if modality == "audiovisual" else {}
    model = build_model(modality=modality, hidden_size=8, num_layers=2, **kw).eval()
    f = SequenceFile(av_file)
    sequences = [(f, info) for info in f.sequences]
    got = predict_sequences(model, sequences, window=5, lanes=2, device="cpu")
    for (seqfile, info), out in zip(sequences, got):
        np.testing.assert_allclose(out, _whole(model, seqfile, info), rtol=1e-5, atol=1e-6)


def test_cli_test_on_an_audiovisual_model_and_on_files_without_audio(av_file, tmp_path,
                                                                    write_sequences):
    train(train=[str(av_file)], out_dir=str(tmp_path / "run"), epochs=1,
          modality="audiovisual", **TINY)
    runner = CliRunner()
    ok = runner.invoke(cli, ["test", str(av_file), "--model", str(tmp_path / "run" / "best.pt"),
                             "--out", str(tmp_path / "test"), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "test" / "predictions").glob("*.csv")) == \
        [f"s{q}.csv" for q in range(5)]
    silent = write_av(write_sequences, tmp_path / "silent.h5", [8], audio=False)
    bad = runner.invoke(cli, ["test", str(silent), "--model", str(tmp_path / "run" / "best.pt"),
                              "--out", str(tmp_path / "test2"), "--device", "cpu"])
    assert bad.exit_code == 1 and "silent.h5" in bad.output and "holds no audio" in bad.output
    assert "Traceback" not in bad.output


# ---------------------------------------------------------------- predict

CLIP = Path(__file__).parent / "data" / "single_face.mp4"


def test_predict_gives_an_audiovisual_model_the_videos_audio(tmp_path):
    from end2you_visual.audio import read_audio, samples_per_frame
    from end2you_visual.inference import StreamingPredictor
    from end2you_visual.predict import VideoAudio, predict_video

    torch.manual_seed(0)
    model = build_model(modality="audiovisual", arch="resnet_tiny", hidden_size=8,
                        num_layers=1, input_size=SIZE, audio_rate=RATE).eval()
    seen = []
    real_call = StreamingPredictor.__call__

    def spy(self, frames, audio=None):
        seen.append((len(frames), None if audio is None else np.array(audio)))
        return real_call(self, frames, audio)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(StreamingPredictor, "__call__", spy)
        result = predict_video(CLIP, model, device="cpu", batch_size=16)
    assert result.predictions.shape == (result.n_frames, 2)
    assert np.isfinite(result.predictions[result.face_found]).all()
    windows = np.concatenate([a for _, a in seen])
    assert len(windows) == result.n_frames
    # By hand: frame i's window is the track's samples of [i/fps, (i+1)/fps).
    track = read_audio(CLIP, RATE)
    fps = result.fps
    n = samples_per_frame(fps, RATE)
    for i in (0, 1, 37, result.n_frames - 1):
        start, stop = (int(np.ceil(round(k / fps * RATE, 6))) for k in (i, i + 1))
        assert stop - start in (n - 1, n)
        np.testing.assert_array_equal(windows[i, :stop - start], track[start:stop])
        assert not windows[i, stop - start:].any()  # a shorter interval: zero-padded
    assert np.abs(windows).max() > 0  # the clip has sound
    again = VideoAudio(CLIP, fps, RATE)
    rest = result.n_frames - 30
    np.testing.assert_array_equal(np.concatenate([again.next(30), again.next(rest)]), windows)


def test_predict_names_a_video_without_audio(tmp_path):
    from end2you_visual.predict import predict_video

    silent = tmp_path / "silent.mp4"
    from moviepy.config import FFMPEG_BINARY
    subprocess.run([FFMPEG_BINARY, "-v", "error", "-i", str(CLIP), "-an",
                    "-c:v", "copy", str(silent)], check=True)
    model = build_model(modality="audiovisual", arch="resnet_tiny", hidden_size=8,
                        num_layers=1, input_size=SIZE)
    with pytest.raises(InputError, match="silent.mp4.*no audio track"):
        predict_video(silent, model, device="cpu")
    audio_only = build_model(modality="audio", hidden_size=8, num_layers=1)
    with pytest.raises(InputError, match="audio model predicts from generated files"):
        predict_video(CLIP, audio_only, device="cpu")


@pytest.mark.parametrize("modality", ["audio", "audiovisual"])
def test_the_zoo_holds_audio_and_audiovisual_models(tmp_path, monkeypatch, modality):
    from end2you_visual.registry import get_weights
    from end2you_visual.zoo import export, load_pretrained

    monkeypatch.setenv("E2Y_VISUAL_PRETRAINED", str(tmp_path / "zoo"))
    torch.manual_seed(0)
    visual = dict(arch="resnet_tiny", input_size=SIZE, projection=4) \
        if modality == "audiovisual" else {}
    model = build_model(modality=modality, hidden_size=8, num_layers=1, outputs=2,
                        label_names=["arousal", "valence"], **visual)
    save_checkpoint(model, tmp_path / "m.pt")
    export(tmp_path / "m.pt", "tiny-m", compact=False, metrics={"ccc": 0.5})
    assert get_weights("tiny-m").arch == ("audio" if modality == "audio" else "resnet_tiny")
    loaded = load_pretrained("tiny-m")
    assert loaded.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
