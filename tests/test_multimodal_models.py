"""The audio model and the audiovisual (model-level fusion) model, on tiny tensors."""
import pytest
import torch

from end2you_visual.models import (AudioModel, AudioVisualModel, VisualModel, build_model,
                                   load_checkpoint, save_checkpoint)
from end2you_visual.models.audio import AudioFrontEnd

TINY_AUDIO = dict(audio_channels=(4, 8, 8))


def _tiny_av(**kw):
    torch.manual_seed(0)
    args = dict(arch="resnet_tiny", hidden_size=8, outputs=2, input_size=32, **TINY_AUDIO)
    return build_model(modality="audiovisual", **{**args, **kw})


def _inputs(b=2, t=3, samples=64):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (b, t, 32, 32, 3), dtype=torch.uint8, generator=g)
    return frames, torch.randn(b, t, samples, generator=g)


def test_audio_front_end_gives_one_vector_per_frame():
    net = AudioFrontEnd((4, 8, 16))
    assert net.num_features == 32
    assert net(torch.randn(2, 5, 640)).shape == (2, 5, 32)
    assert net(torch.randn(1, 3, 16)).shape == (1, 3, 32)  # short windows still work
    with pytest.raises(ValueError, match="two or more"):
        AudioFrontEnd((4,))
    with pytest.raises(ValueError, match=r"\(B, T, samples\)"):
        net(torch.randn(5, 640))


def test_build_model_selects_the_modality():
    assert isinstance(build_model("resnet_tiny"), VisualModel)
    audio = build_model(modality="audio", hidden_size=8, outputs=3, **TINY_AUDIO)
    assert isinstance(audio, AudioModel) and audio.config["modality"] == "audio"
    assert audio(torch.randn(2, 4, 100)).shape == (2, 4, 3)
    assert isinstance(_tiny_av(), AudioVisualModel)
    with pytest.raises(ValueError, match="unknown modality"):
        build_model(modality="smell")


@pytest.mark.parametrize("projection", [0, 6])
def test_audiovisual_shapes_and_backward(projection):
    model = _tiny_av(projection=projection, temporal="gru")
    frames, sound = _inputs()
    fused = model.features(frames, sound)
    assert fused.shape == (2, 3, 12 if projection else 64 + 16)
    out, state = model(frames, sound, return_state=True)
    assert out.shape == (2, 3, 2) and state.shape == (2, 2, 8)
    out.square().mean().backward()
    assert model.visual.extractor.conv1.weight.grad.abs().sum() > 0
    assert model.audio.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(frames, sound[:, :2])


def test_frozen_visual_branch_gets_no_gradient_and_stays_in_eval():
    model = _tiny_av(freeze_visual=True).train()
    assert not model.visual.training and model.audio.training
    before = model.visual.extractor.bn1.running_mean.clone()
    frames, sound = _inputs()
    model(frames, sound).sum().backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert model.head.weight.grad is not None
    assert torch.equal(model.visual.extractor.bn1.running_mean, before)


def test_head_and_activate_follow_visual_model():
    model = _tiny_av(head="multiclass", outputs=3, label_names=["a", "b", "c"]).eval()
    frames, sound = _inputs()
    probs = model.activate(model(frames, sound))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))
    model.replace_head(head="regression", outputs=2)
    assert model.label_names == ["output_0", "output_1"] and model(frames, sound).shape[-1] == 2


def test_checkpoint_round_trip(tmp_path):
    model = _tiny_av(projection=4, freeze_visual=True).eval()
    path = save_checkpoint(model, tmp_path / "av.pt", extra={"epoch": 3})
    loaded = load_checkpoint(path)
    assert type(loaded) is AudioVisualModel and loaded.config == model.config
    assert loaded.extra == {"epoch": 3}
    frames, sound = _inputs()
    assert torch.equal(loaded(frames, sound), model(frames, sound))
    audio = build_model(modality="audio", hidden_size=8, **TINY_AUDIO).eval()
    loaded = load_checkpoint(save_checkpoint(audio, tmp_path / "a.pt"))
    x = torch.randn(1, 4, 80)
    assert type(loaded) is AudioModel and torch.equal(loaded(x), audio(x))


def test_visual_branch_init_equals_the_source_weights(tmp_path):
    torch.manual_seed(5)
    source = build_model("resnet_tiny", head="multiclass", outputs=7, temporal="none")
    path = save_checkpoint(source, tmp_path / "visual.pt")
    model = _tiny_av()
    report = model.init_visual(load_checkpoint(path))
    cnn = source.extractor.state_dict()
    assert len(report.loaded) == len(cnn) and report.missing == []
    assert sorted(k for k, _ in report.skipped) == ["head.bias", "head.weight"]
    for key, tensor in model.visual.extractor.state_dict().items():
        assert torch.equal(tensor, cnn[key]), key
    frames, _ = _inputs()
    assert torch.equal(model.visual.eval().features(frames), source.eval().features(frames))
