"""Visual models: shapes, input handling, state carry, I3D, checkpoints."""
import json
import os

import pytest
import torch
from torch import nn

from end2you_visual.errors import InputError
from end2you_visual.models import (HEADS, TEMPORALS, build_model, inflate_weight, load_checkpoint,
                                   read_checkpoint, save_checkpoint)
from end2you_visual.models.resnet import build_resnet

TINY = dict(arch="resnet_tiny", hidden_size=8, num_layers=2)


def frames(b=2, t=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=g)


def tiny(**kw):
    torch.manual_seed(0)
    return build_model(**{**TINY, **kw}).eval()


@pytest.mark.parametrize("arch", ["resnet_tiny", "i3d_resnet_tiny"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("temporal", TEMPORALS)
def test_output_and_feature_shapes(arch, head, temporal):
    model = tiny(arch=arch, head=head, temporal=temporal, outputs=3)
    x = frames()
    assert model(x).shape == (2, 3, 3)
    assert model.features(x).shape == (2, 3, 64)
    assert model.num_features == 64


def test_resnet18_shapes():
    model = build_model("resnet18", outputs=2, hidden_size=8, num_layers=1).eval()
    x = frames(b=1, t=2)
    assert model(x).shape == (1, 2, 2)
    assert model.features(x).shape == (1, 2, 512)


def test_i3d_keeps_time_for_short_and_long_clips():
    model = tiny(arch="i3d_resnet_tiny", temporal="none")
    assert model(frames(b=1, t=1)).shape == (1, 1, 2)
    assert model(frames(b=1, t=5)).shape == (1, 5, 2)


def test_frame_level_mode_treats_frames_independently():
    model = tiny(temporal="none", head="multilabel", outputs=4)
    x = frames(t=3)
    whole = model(x)
    torch.testing.assert_close(whole[:, 1], model(x[:, 1:2])[:, 0])
    assert model.temporal is None


def test_uint8_channels_last_equals_float_channels_first():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    # (B, T, H, W, 3) uint8, as the HDF5 reader gives
    u8 = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8, generator=g)
    as_float = u8.permute(0, 1, 4, 2, 3).float() / 255
    torch.testing.assert_close(model(u8), model(as_float))
    # uint8 (B, T, 3, H, W)
    torch.testing.assert_close(model(u8.permute(0, 1, 4, 2, 3)), model(as_float))


def test_normalisation_uses_the_stored_mean_and_std():
    model = tiny(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), temporal="none")
    x = frames(b=1, t=2)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    expected = model.extractor((x.flatten(0, 1) - mean) / std).unflatten(0, (1, 2))
    torch.testing.assert_close(model.features(x), expected)
    assert "mean" not in model.state_dict()  # the config holds them


@pytest.mark.parametrize("temporal", ["lstm", "gru"])
def test_state_carry_equals_one_pass(temporal):
    model = tiny(temporal=temporal)
    x = frames(b=2, t=7)
    whole = model(x)
    first, state = model(x[:, :4], return_state=True)
    second, _ = model(x[:, 4:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    fresh = model(x[:, 4:])
    assert not torch.allclose(fresh, whole[:, 4:])  # the state matters


def test_activate_by_head_kind():
    out = torch.tensor([[[0.0, 1.0, -1.0]]])
    assert torch.equal(tiny(head="regression", outputs=3).activate(out), out)
    multilabel = tiny(head="multilabel", outputs=3)
    torch.testing.assert_close(multilabel.activate(out), torch.sigmoid(out))
    probs = tiny(head="multiclass", outputs=3).activate(out)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 1))
    torch.testing.assert_close(probs, torch.softmax(out, -1))


def test_config_is_plain_and_rebuilds_the_model():
    model = tiny(arch="i3d_resnet_tiny", head="multilabel", outputs=3, temporal="gru",
                 label_names=["a", "b", "c"], dropout=0.1, input_size=64)
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    again = build_model(**config)
    assert again.config == model.config
    def shapes(m):
        return {k: v.shape for k, v in m.state_dict().items()}

    assert shapes(again) == shapes(model)
    assert model.label_names == ["a", "b", "c"]
    assert tiny(outputs=2).label_names == ["output_0", "output_1"]


def test_replace_head_keeps_extractor_and_recurrent_bit_for_bit():
    model = tiny(head="multilabel", outputs=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.replace_head("regression", 2, ["arousal", "valence"])
    after = model.state_dict()
    kept = [k for k in before if not k.startswith("head.")]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert after["head.weight"].shape == (2, 8)
    assert model.config["head"] == "regression" and model.config["outputs"] == 2
    assert model.label_names == ["arousal", "valence"]
    assert model(frames()).shape == (2, 3, 2)


def test_bad_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="head"):
        build_model(**TINY, head="ordinal")
    with pytest.raises(ValueError, match="temporal"):
        build_model(**TINY, temporal="transformer")
    with pytest.raises(ValueError, match="label names"):
        build_model(**TINY, outputs=2, label_names=["a"])
    with pytest.raises(ValueError, match="shape"):
        tiny()(torch.rand(2, 3, 32, 32))


def test_inflated_weights_average_back_to_2d():
    w2d = torch.randn(4, 3, 7, 7)
    w3d = inflate_weight(w2d, 3)
    assert w3d.shape == (4, 3, 3, 7, 7)
    torch.testing.assert_close(w3d.sum(dim=2), w2d)


def test_i3d_on_a_static_clip_gives_the_2d_features():
    model2d = tiny(temporal="none")
    model3d = tiny(arch="i3d_resnet_tiny", temporal="none")
    report = model3d.inflate_from_2d(model2d)
    assert report.missing == [] and report.skipped == []
    assert "extractor.conv1.weight" in report.inflated
    assert "extractor.layer1.0.conv1.weight" in report.inflated
    assert model3d.extractor.conv1.weight.shape[2] == 3
    still = frames(b=1, t=1).repeat(1, 4, 1, 1, 1)
    torch.testing.assert_close(model3d.features(still), model2d.features(still),
                               atol=1e-5, rtol=1e-4)
    moving = frames(b=1, t=4)
    assert not torch.allclose(model3d.features(moving), model2d.features(moving), atol=1e-3)


def test_inflate_from_a_bare_torchvision_state_dict():
    torch.manual_seed(1)
    cnn = build_resnet("resnet_tiny")
    state = {**cnn.state_dict(), "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    model3d = tiny(arch="i3d_resnet_tiny")
    report = model3d.inflate_from_2d(state)
    assert [k for k, _ in report.skipped] == ["fc.weight", "fc.bias"]
    not_cnn = [k for k in model3d.state_dict() if not k.startswith("extractor.")]
    assert sorted(report.missing) == sorted(not_cnn)
    torch.testing.assert_close(model3d.extractor.bn1.running_var, cnn.bn1.running_var)


@pytest.mark.parametrize("arch", ["resnet_tiny", "i3d_resnet_tiny"])
def test_bf16_autocast_on_cpu(arch):
    model = tiny(arch=arch)
    x = torch.randint(0, 256, (1, 3, 32, 32, 3), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = model(x, return_state=True)
        out2 = model(x, state=state)
    assert out.shape == out2.shape == (1, 3, 2)
    assert torch.isfinite(out.float()).all() and torch.isfinite(out2.float()).all()


@pytest.mark.parametrize("arch", ["resnet_tiny", "i3d_resnet_tiny"])
def test_channels_last_model_gives_the_same_outputs(arch):
    model = tiny(arch=arch)
    x = frames()
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)  # I3D: channels_last_3d
    fmt = torch.channels_last_3d if arch.startswith("i3d") else torch.channels_last
    assert model.extractor.conv1.weight.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)


def test_training_step_reaches_every_parameter():
    model = tiny(dropout=0.2).train()
    model(frames()).pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


# --- checkpoints ------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    model = tiny(head="multilabel", outputs=3, label_names=["x", "y", "z"])
    extra = {"epoch": 4, "metrics": {"ccc": 0.5}}
    path = save_checkpoint(model, tmp_path / "sub" / "m.pt", extra=extra)
    assert os.listdir(tmp_path / "sub") == ["m.pt"]  # no temporary file left
    raw = read_checkpoint(path)
    assert raw["format"] == "end2you-visual-model" and raw["version"] == 1
    assert raw["config"] == model.config and raw["epoch"] == 4
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.extra == {"epoch": 4, "metrics": {"ccc": 0.5}}
    assert loaded.label_names == ["x", "y", "z"]
    x = frames()
    assert torch.equal(loaded(x), model(x))


def test_checkpoint_with_optimizer_state(tmp_path):
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=4e-5)
    model.train()
    model(frames()).mean().backward()
    opt.step()
    path = save_checkpoint(model, tmp_path / "m.pt", extra={"optimizer": opt.state_dict()})
    opt2 = torch.optim.Adam(model.parameters(), lr=1.0)
    opt2.load_state_dict(load_checkpoint(path).extra["optimizer"])
    assert opt2.param_groups[0]["lr"] == 4e-5


def test_save_refuses_objects_and_reserved_keys(tmp_path):
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tiny(), tmp_path / "m.pt", extra={"bad": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tiny(), tmp_path / "m.pt", extra={"config": {}})
    assert not (tmp_path / "m.pt").exists()


class _Booby:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_file_is_refused_and_not_executed(tmp_path):
    model = tiny()
    marker = tmp_path / "code_ran"
    ckpt = {"format": "end2you-visual-model", "version": 1, "config": model.config,
            "state_dict": model.state_dict(), "note": _Booby(marker)}
    path = tmp_path / "tampered.pt"
    torch.save(ckpt, path)
    assert not marker.exists()
    with pytest.raises(InputError, match="pickled Python objects") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_unreadable_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "e2y.pth.tar"
    torch.save({"epoch": 1, "state_dict": {"linear.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(InputError, match="import_end2you"):
        load_checkpoint(foreign)
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    mismatched = tmp_path / "mismatch.pt"
    save_checkpoint(tiny(), mismatched)
    ckpt = torch.load(mismatched, weights_only=True)
    ckpt["config"]["hidden_size"] = 9
    torch.save(ckpt, mismatched)
    with pytest.raises(InputError, match="do not match"):
        load_checkpoint(mismatched)


def test_compact_checkpoint_loads_close_to_the_original(tmp_path):
    model = tiny()
    path = save_checkpoint(model, tmp_path / "m.pt", compact=True)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert state["extractor.conv1.weight::int8"].dtype == torch.int8
    assert "extractor.conv1.weight" not in state
    loaded = load_checkpoint(path)
    x = frames()
    ref = model(x)
    assert (loaded(x) - ref).abs().max() <= 0.05 * ref.abs().max()
    assert torch.equal(loaded.head.bias, model.head.bias)  # biases stay exact


def test_compiled_model_checkpoint_has_plain_keys(tmp_path):
    model = tiny()
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until called
    path = save_checkpoint(compiled, tmp_path / "m.pt")
    assert set(read_checkpoint(path)["state_dict"]) == set(model.state_dict())


def test_extractor_is_an_ordinary_module():
    model = tiny()
    assert isinstance(model.extractor, nn.Module)
    assert isinstance(model.temporal, nn.LSTM) and model.temporal.batch_first


def test_grey_model_sees_colour_as_its_luma():
    torch.manual_seed(0)
    colour = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none")
    grey = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none", grey=True)
    grey.load_state_dict(colour.state_dict())
    colour.eval(), grey.eval()
    frames = torch.randint(0, 256, (1, 2, 16, 16, 3), dtype=torch.uint8)
    luma = (frames.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).sum(-1)
    as_grey = luma.unsqueeze(-1).expand(-1, -1, -1, -1, 3).float() / 255
    with torch.no_grad():
        # The grey model on colour == the colour model on the grey picture...
        torch.testing.assert_close(grey(frames), colour(as_grey), atol=1e-5, rtol=1e-5)
        # ...and on grey images (R = G = B, like FER2013) the two agree.
        grey_frames = frames[..., :1].expand(-1, -1, -1, -1, 3)
        torch.testing.assert_close(grey(grey_frames), colour(grey_frames), atol=1e-5, rtol=1e-5)
    assert grey.config["grey"] is True and build_model(**grey.config).grey


def test_build_model_is_defined_once_and_takes_the_visual_models_arguments_in_order():
    from end2you_visual.models import VisualModel, build, visual

    assert not hasattr(visual, "build_model")  # one definition, in models.build
    torch.manual_seed(0)
    model = build.build_model("resnet_tiny", "multiclass", 3, "gru", 4, 1)
    assert type(model) is VisualModel
    assert {k: model.config[k] for k in ("arch", "head", "outputs", "temporal", "hidden_size",
                                         "num_layers")} == {
        "arch": "resnet_tiny", "head": "multiclass", "outputs": 3, "temporal": "gru",
        "hidden_size": 4, "num_layers": 1}
    assert build_model(**model.config).config == model.config
    with pytest.raises(TypeError):
        build_model("resnet_tiny", modality="visual", channels=3)  # not a visual argument
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        build_model(modality="video")
