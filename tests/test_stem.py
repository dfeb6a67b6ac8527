"""CNN stems for small face crops: sizes on 48 px input, weights carried
between stems, checkpoints and zoo entries keeping the stem, old configs."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from end2you_visual import zoo
from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.models import build_model, load_checkpoint, save_checkpoint
from end2you_visual.models.checkpoint import safe_torch_load
from end2you_visual.models.resnet import STEMS, build_resnet
from end2you_visual.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# stem -> (conv1 kernel, side after the stem, side after layer4) on 48 px input
SIDES_48 = {"imagenet": (7, 12, 2), "nopool": (7, 24, 3), "small": (3, 24, 3),
            "small1": (3, 48, 6)}


def stem_output(net, x):
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def test_the_stems_are_the_ones_measured_here():
    assert sorted(STEMS) == sorted(SIDES_48)


@pytest.mark.parametrize("stem", sorted(SIDES_48))
@pytest.mark.parametrize("arch, maps", [("resnet18", 64), ("resnet34", 64), ("resnet50", 64),
                                        ("resnet18_half", 32), ("resnet_tiny", 8)])
def test_stem_output_size_on_48_px(arch, maps, stem):
    kernel, side, _ = SIDES_48[stem]
    net = build_resnet(arch, stem).eval()
    assert net.conv1.kernel_size == (kernel, kernel)
    assert isinstance(net.maxpool, nn.MaxPool2d) == (stem == "imagenet")
    with torch.no_grad():
        out = stem_output(net, torch.zeros(2, 3, 48, 48))
    assert tuple(out.shape) == (2, maps, side, side)


@pytest.mark.parametrize("stem", sorted(SIDES_48))
def test_last_stage_size_and_features_on_48_px(stem):
    net = build_resnet("resnet_tiny", stem).eval()
    seen = {}

    def keep_shape(module, inputs, output):
        seen["layer4"] = output.shape

    net.layer4.register_forward_hook(keep_shape)
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 48, 48))
    side = SIDES_48[stem][2]
    assert tuple(seen["layer4"]) == (2, 64, side, side) and tuple(out.shape) == (2, 64)


def test_half_resnet18_is_resnet18_with_half_the_maps():
    full, half = build_resnet("resnet18", "small"), build_resnet("resnet18_half", "small")
    for name, module in list(full.named_modules())[1:]:
        other = half.get_submodule(name)
        assert type(other) is type(module), name
        if isinstance(module, nn.Conv2d):
            assert other.kernel_size == module.kernel_size and other.stride == module.stride
            assert other.out_channels * 2 == module.out_channels, name
            quarter = 2 if name == "conv1" else 4  # the stem sees 3 channels in both
            assert other.weight.numel() * quarter == module.weight.numel(), name
    with torch.no_grad():
        assert tuple(half.eval()(torch.zeros(2, 3, 48, 48)).shape) == (2, 256)
    assert 2.7e6 < sum(p.numel() for p in half.parameters()) < 2.9e6


def test_small_stem_in_a_visual_model_and_i3d():
    model = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none",
                        input_size=48, stem="small").eval()
    assert model.config["stem"] == "small"
    frames = torch.randint(0, 256, (2, 1, 48, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert tuple(model(frames).shape) == (2, 1, 3)
    i3d = build_model("i3d_resnet_tiny", head="regression", outputs=2, hidden_size=4,
                      num_layers=1, stem="small").eval()
    assert i3d.extractor.conv1.kernel_size == (3, 3, 3)
    assert isinstance(i3d.extractor.maxpool, nn.Identity)
    with torch.no_grad():
        assert tuple(i3d(torch.rand(1, 4, 3, 32, 32)).shape) == (1, 4, 2)


def test_unknown_stem_is_refused():
    with pytest.raises(ValueError, match="unknown stem 'big'"):
        build_model("resnet_tiny", stem="big")
    with pytest.raises(InputError, match="--stem"):
        TrainConfig(train=["data/"], stem="big").check()
    cfg = TrainConfig(train=["data/"], stem="small")
    cfg.check()
    assert TrainConfig().stem == "imagenet"


def test_nopool_keeps_every_weight_of_the_imagenet_stem():
    torch.manual_seed(0)
    source = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none").eval()
    moved = source.with_stem("nopool")
    assert moved.config["stem"] == "nopool" and source.config["stem"] == "imagenet"
    assert not moved.training
    for key, value in source.state_dict().items():
        assert torch.equal(moved.state_dict()[key], value), key
    x = torch.rand(1, 1, 3, 48, 48)
    with torch.no_grad():  # same weights, one max-pool fewer: other outputs
        assert not torch.allclose(moved(x), source(x))
        assert torch.equal(moved.extractor.conv1(x[0]), source.extractor.conv1(x[0]))


def test_small_stem_keeps_all_but_the_stem_convolution():
    torch.manual_seed(0)
    source = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none")
    moved = source.with_stem("small")
    assert tuple(moved.extractor.conv1.weight.shape) == (8, 3, 3, 3)
    kept = [k for k in source.state_dict() if k != "extractor.conv1.weight"]
    assert len(kept) == len(source.state_dict()) - 1
    for key in kept:
        assert torch.equal(moved.state_dict()[key], source.state_dict()[key]), key


@pytest.mark.parametrize("compact", [False, True])
def test_checkpoint_round_trip_keeps_the_stem(tmp_path, compact):
    torch.manual_seed(0)
    model = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none",
                        input_size=48, stem="small").eval()
    path = save_checkpoint(model, tmp_path / "m.pt", compact=compact)
    loaded = load_checkpoint(path)
    assert loaded.config["stem"] == "small"
    assert loaded.extractor.conv1.kernel_size == (3, 3)
    assert isinstance(loaded.extractor.maxpool, nn.Identity)
    x = torch.randint(0, 256, (2, 1, 48, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        if compact:
            assert torch.allclose(loaded(x), model(x), atol=0.05)
        else:
            assert torch.equal(loaded(x), model(x))


def test_a_config_without_stem_loads_as_imagenet(tmp_path):
    # Checkpoints written before stems existed have no "stem" in their config.
    torch.manual_seed(0)
    model = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none").eval()
    path = save_checkpoint(model, tmp_path / "old.pt")
    ckpt = safe_torch_load(path)
    del ckpt["config"]["stem"]
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    assert loaded.config["stem"] == "imagenet"
    assert loaded.extractor.conv1.kernel_size == (7, 7)
    assert isinstance(loaded.extractor.maxpool, nn.MaxPool2d)
    x = torch.rand(1, 1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_zoo_export_and_load_pretrained_keep_the_stem(tmp_path, monkeypatch):
    monkeypatch.setenv("E2Y_VISUAL_PRETRAINED", str(tmp_path / "pretrained"))
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path / "home"))
    (tmp_path / "pretrained").mkdir()
    torch.manual_seed(0)
    model = build_model("resnet_tiny", head="multiclass", outputs=3, temporal="none",
                        input_size=48, stem="small1").eval()
    ckpt = save_checkpoint(model, tmp_path / "best.pt")
    entry = zoo.export(ckpt, "tiny-small1", compact=False)
    assert entry.build["stem"] == "small1"
    loaded = zoo.load_pretrained("tiny-small1")
    assert loaded.config["stem"] == "small1" and loaded.extractor.conv1.stride == (1, 1)
    x = torch.rand(1, 1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _image_classes(write_sequences, path, n=12, side=16):
    """n one-frame sequences of 3 classes, told apart by brightness."""
    def rows(q, _, rng):
        frame = rng.integers(0, 30, (1, side, side, 3)) + 80 * (q % 3)
        return frame.astype(np.uint8), np.eye(3)[[q % 3]]

    return write_sequences(path, [1] * n, rows, names=["a", "b", "c"], kind="multiclass",
                           size=side)


def test_train_stem_option_and_recipe_key(tmp_path, write_sequences):
    data = _image_classes(write_sequences, tmp_path / "h5" / "images-00000.h5")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nwindow = 1\nsplit_by = "sequence"\nvalid_fraction = 0.25\n'
                      '[model]\narch = "resnet_tiny"\ntemporal = "none"\nstem = "small1"\n'
                      '[optimisation]\nepochs = 1\nbatch_size = 3\nnum_workers = 0\n')
    assert TrainConfig.from_toml(recipe, train=["x/"]).stem == "small1"
    runs = {}
    for name, extra in (("recipe", []), ("option", ["--stem", "small"])):
        out = tmp_path / name
        res = CliRunner().invoke(cli, ["train", str(data.parent), "--config", str(recipe),
                                       "--out", str(out), "--no-progress", "--no-tensorboard",
                                       "--precision", "fp32", *extra])
        assert res.exit_code == 0, res.output
        runs[name] = load_checkpoint(out / "best.pt")
    assert runs["recipe"].config["stem"] == "small1"
    assert runs["recipe"].extractor.conv1.stride == (1, 1)
    assert runs["option"].config["stem"] == "small"  # the option wins over the recipe
    assert runs["option"].extractor.conv1.stride == (2, 2)
    bad = CliRunner().invoke(cli, ["train", str(data.parent), "--stem", "big"])
    assert bad.exit_code == 2 and "'big' is not one of" in bad.output
