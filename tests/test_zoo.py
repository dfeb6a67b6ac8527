"""The model zoo: registry, checksums, fetch, fine-tuning heads, int8 weights, End2You import."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from end2you_visual import zoo
from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.models import build_model, read_checkpoint, save_checkpoint
from end2you_visual.models.resnet import build_resnet

EMOTIONS = ["neutral", "happy", "surprise", "disgust", "contempt", "confusion", "empathy", "other"]


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty pretrained folder and home folder of our own."""
    pretrained, home = tmp_path / "pretrained", tmp_path / "home"
    pretrained.mkdir()
    monkeypatch.setenv("E2Y_VISUAL_PRETRAINED", str(pretrained))
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(home))
    return pretrained, home


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """The shipped zoo, and an empty home folder of our own."""
    monkeypatch.delenv("E2Y_VISUAL_PRETRAINED", raising=False)
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def tiny_model(**kw):
    torch.manual_seed(0)
    config = dict(arch="resnet_tiny", head="multilabel", outputs=8, label_names=EMOTIONS,
                  hidden_size=8)
    return build_model(**{**config, **kw}).eval()


@pytest.fixture
def registered(places):
    """A tiny 8-emotion model saved in the pretrained folder and registered."""
    pretrained, _ = places
    model = tiny_model()
    path = save_checkpoint(model, pretrained / "tiny_emotions.pt")
    entry = zoo.register_weights("tiny_emotions", path, training_data="synthetic", licence="CC0")
    return model, path, entry


def frames(t=3):
    return torch.rand(2, t, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_shipped_registry_lists_only_verifiable_entries(shipped):
    # The editable install maps the package end2you_visual.pretrained onto
    # the repository's pretrained/ (setup.cfg); a wheel carries it inside.
    repo = Path(zoo.__file__).resolve().parent.parent
    import end2you_visual.pretrained

    assert Path(end2you_visual.pretrained.__file__).parent == repo / "pretrained"
    assert zoo.pretrained_dir() == repo / "pretrained"
    assert zoo.registry_paths() == [repo / "pretrained" / "registry.json",
                                    shipped / "registry.json"]
    assert zoo.registry_path() == shipped / "registry.json"  # where export writes
    assert [w.name for w in zoo.list_pretrained()] == SHIPPED_MODELS
    for weights in zoo.list_pretrained():
        assert re.fullmatch(r"[0-9a-f]{64}", weights.sha256)


def test_register_list_and_load_by_name(registered):
    model, path, entry = registered
    assert entry.file == "tiny_emotions.pt" and entry.sha256 == zoo.sha256_file(path)
    assert entry.head == "multilabel" and entry.outputs == 8 and entry.label_names == EMOTIONS
    assert [w.name for w in zoo.list_pretrained()] == ["tiny_emotions"]
    loaded = zoo.load_pretrained("tiny_emotions")
    assert not loaded.training and loaded.weights.name == "tiny_emotions"
    assert loaded.label_names == EMOTIONS
    assert torch.equal(loaded(frames()), model(frames()))


def test_package_reexports_the_zoo(registered):
    import end2you_visual

    assert [w.name for w in end2you_visual.list_pretrained()] == ["tiny_emotions"]
    assert end2you_visual.load_pretrained("tiny_emotions").config["outputs"] == 8


def test_fine_tune_head_keeps_the_extractor_bit_for_bit(registered):
    model, _, _ = registered
    tuned = zoo.load_pretrained("tiny_emotions", head="regression", outputs=2,
                                label_names=["arousal", "valence"])
    before, after = model.state_dict(), tuned.state_dict()
    kept = [k for k in before if not k.startswith("head.")]
    assert any(k.startswith("extractor.") for k in kept)
    assert any(k.startswith("temporal.") for k in kept)
    assert all(torch.equal(before[k], after[k]) for k in kept)
    assert after["head.weight"].shape == (2, 8)
    assert tuned.config["head"] == "regression" and tuned.label_names == ["arousal", "valence"]
    assert zoo.load_pretrained("tiny_emotions", outputs=2).label_names == ["output_0", "output_1"]


def test_label_names_alone_rename_without_new_weights(registered):
    model, _, _ = registered
    names = [f"e{i}" for i in range(8)]
    renamed = zoo.load_pretrained("tiny_emotions", label_names=names)
    assert renamed.label_names == names
    assert torch.equal(renamed.head.weight, model.head.weight)


def test_path_instead_of_name(registered, tmp_path):
    model, _, _ = registered
    multiclass = tiny_model(outputs=3, label_names=None, head="multiclass")
    other = save_checkpoint(multiclass, tmp_path / "x.pt")
    assert zoo.load_pretrained(str(other)).config["head"] == "multiclass"
    with pytest.raises(InputError, match="neither a registered"):
        zoo.load_pretrained("no_such_model")


def test_checksum_mismatch_is_refused(registered):
    _, path, entry = registered
    with open(path, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.load_pretrained("tiny_emotions")
    message = str(err.value)
    assert str(path) in message and entry.sha256 in message and zoo.sha256_file(path) in message
    assert "e2y-visual zoo fetch tiny_emotions" in message


def test_a_verified_cache_copy_wins_over_a_corrupt_one(registered, places, tmp_path):
    _, path, _ = registered
    good = tmp_path / "good.pt"
    good.write_bytes(path.read_bytes())
    with open(path, "ab") as handle:
        handle.write(b"\0")
    fetched = zoo.fetch("tiny_emotions", source=str(good))
    assert fetched == places[1] / "tiny_emotions.pt"
    assert zoo.load_pretrained("tiny_emotions").config["outputs"] == 8


def test_missing_file_says_where_it_looked_and_how_to_get_it(registered, places):
    _, path, _ = registered
    path.unlink()
    pretrained, cache = places
    with pytest.raises(zoo.WeightsNotFoundError) as err:
        zoo.load_pretrained("tiny_emotions")
    message = str(err.value)
    assert str(pretrained / "tiny_emotions.pt") in message
    assert str(cache / "tiny_emotions.pt") in message
    assert "e2y-visual zoo fetch tiny_emotions --from PATH_OR_URL" in message


def test_fetch_from_a_path_and_a_file_url_into_the_cache(registered, places, tmp_path):
    _, path, _ = registered
    _, cache = places
    source = tmp_path / "elsewhere.pt"
    path.rename(source)
    fetched = zoo.fetch("tiny_emotions", source=str(source))
    assert fetched == cache / "tiny_emotions.pt" and fetched.is_file()
    assert zoo.load_pretrained("tiny_emotions").config["outputs"] == 8
    fetched.unlink()
    assert zoo.fetch("tiny_emotions", source=source.as_uri()) == fetched  # file:// URL, no network


def test_fetch_of_a_wrong_file_leaves_nothing(registered, places, tmp_path):
    _, path, _ = registered
    _, cache = places
    path.unlink()
    wrong = save_checkpoint(tiny_model(hidden_size=4), tmp_path / "wrong.pt")
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.fetch("tiny_emotions", source=str(wrong))
    message = str(err.value)  # names the source, not the temporary .part file
    assert message.startswith(f"{wrong}: SHA-256 mismatch") and ".part" not in message
    assert message.endswith("nothing was written")
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(InputError, match="no known address"):
        zoo.fetch("tiny_emotions")


def test_fetch_from_a_missing_url_names_the_url(registered, places, tmp_path):
    _, path, _ = registered
    _, home = places
    path.unlink()
    url = (tmp_path / "gone.pt").as_uri()
    with pytest.raises(InputError) as err:
        zoo.fetch("tiny_emotions", source=url)
    assert str(err.value).startswith(f"{url}: cannot download: ")
    assert ".part" not in str(err.value) and not home.exists()


def test_registry_entry_must_match_its_file(registered, places):
    pretrained, _ = places
    data = json.loads((pretrained / "registry.json").read_text())
    data["models"][0]["arch"] = "resnet50"
    (pretrained / "registry.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="registry 'resnet50'"):
        zoo.load_pretrained("tiny_emotions")
    data["models"][0]["archh"] = "typo"
    (pretrained / "registry.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown fields"):
        zoo.list_pretrained()


def test_registering_a_name_twice_needs_replace(registered):
    _, path, _ = registered
    with pytest.raises(InputError, match="already registered"):
        zoo.register_weights("tiny_emotions", path)
    zoo.register_weights("tiny_emotions", path, replace=True, description="again")
    assert [w.description for w in zoo.list_pretrained()] == ["again"]


# --- int8 compact weights ---------------------------------------------------

def test_int8_round_trip_error_is_within_half_a_step():
    model = tiny_model()
    state = model.state_dict()
    packed = zoo.quantize_state_dict(state)
    restored = zoo.dequantize_state_dict(packed)
    assert set(restored) == set(state)
    for key, tensor in state.items():
        if key + "::int8" in packed:
            assert packed[key + "::int8"].dtype == torch.int8
            step = packed[key + "::scale"].view((-1,) + (1,) * (tensor.dim() - 1))
            assert ((restored[key] - tensor).abs() <= step / 2 + 1e-7).all(), key
        else:
            assert torch.equal(restored[key], tensor), key  # biases, BN statistics
    assert "extractor.conv1.weight::int8" in packed and "head.bias" in packed
    assert "temporal.weight_ih_l0::int8" in packed
    with pytest.raises(ValueError, match="::"):
        zoo.quantize_state_dict({"a::int8": torch.zeros(2, 2)})
    with pytest.raises(KeyError, match="::scale"):
        zoo.dequantize_state_dict({"w::int8": torch.zeros(2, 2, dtype=torch.int8)})


def test_int8_checkpoint_through_the_zoo(places):
    pretrained, _ = places
    model = tiny_model()
    path = save_checkpoint(model, pretrained / "compact.pt", compact=True)
    zoo.register_weights("compact", path)
    loaded = zoo.load_pretrained("compact")
    ref = model.activate(model(frames()))
    assert (loaded.activate(loaded(frames())) - ref).abs().max() < 0.02


# --- End2You import ---------------------------------------------------------

class End2YouLike(nn.Module):
    """The module layout End2You's VisualRNNModel saves (our own re-creation)."""

    def __init__(self, arch="resnet_tiny", rnn=nn.GRU, hidden=16, outputs=2):
        super().__init__()
        self.visual_model = nn.Module()
        self.visual_model.model = nn.Sequential(*list(build_resnet(arch).children())[:-1])
        self.rnn = nn.Module()
        features = 512 if arch == "resnet18" else 64
        self.rnn.rnn = rnn(features, hidden, 2, batch_first=True)
        self.linear = nn.Linear(hidden, outputs)

    def forward(self, x):  # (B, T, 3, H, W) in [0, 1], no normalisation
        b, t = x.shape[:2]
        feats = self.visual_model.model(x.flatten(0, 1)).view(b, t, -1)
        return self.linear(self.rnn.rnn(feats)[0])


def save_end2you(module, path):
    """As End2You's trainer saves: epoch, state_dict, optim_dict and score info."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    module(frames(t=2)).mean().backward()
    opt.step()
    torch.save({"epoch": 3, "state_dict": module.state_dict(), "optim_dict": opt.state_dict(),
                "validation_score": 0.41, "metric_name": "ccc", "loss_name": "ccc"}, path)
    return path


@pytest.mark.parametrize("data_parallel", [False, True])
def test_import_end2you_checkpoint(tmp_path, data_parallel):
    torch.manual_seed(3)
    e2y = End2YouLike()
    saved = nn.DataParallel(e2y) if data_parallel else e2y  # DataParallel adds 'module.'
    path = save_end2you(saved, tmp_path / "best.pth.tar")
    keys = torch.load(path, weights_only=True)["state_dict"]
    assert any(k.startswith("module.") for k in keys) == data_parallel
    model = build_model("resnet_tiny", temporal="gru", hidden_size=16, num_layers=2, outputs=2,
                        mean=(0, 0, 0), std=(1, 1, 1))
    report = zoo.import_end2you(str(path), model)
    assert report.missing == [] and report.skipped == [] and report.inflated == []
    assert len(report.loaded) == len(model.state_dict())
    e2y.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(frames()), e2y(frames()))


def test_import_end2you_skips_what_does_not_fit(tmp_path):
    path = save_end2you(End2YouLike(), tmp_path / "last.pth.tar")
    lstm = build_model("resnet_tiny", temporal="lstm", hidden_size=16, num_layers=2, outputs=3)
    report = zoo.import_end2you(path, lstm)
    assert all(k.startswith("extractor.") for k in report.loaded)
    skipped = dict(report.skipped)
    assert "gru" in skipped["rnn.rnn.weight_ih_l0"] and "lstm" in skipped["rnn.rnn.weight_ih_l0"]
    assert "(2, 16)" in skipped["linear.weight"]  # 2 outputs there, 3 here
    assert "head.weight" in report.missing and "temporal.weight_hh_l1" in report.missing
    i3d = build_model("i3d_resnet_tiny", temporal="gru", hidden_size=16, num_layers=2, outputs=2)
    assert "extractor.conv1.weight" in zoo.import_end2you(path, i3d).inflated
    with pytest.raises(InputError, match="does not fit"):
        zoo.import_end2you(path, build_model("resnet18", hidden_size=16))


def test_end2you_config_infers_the_model(tmp_path):
    torch.manual_seed(0)
    state = End2YouLike(arch="resnet18", hidden=8, outputs=2).state_dict()
    config = zoo.end2you_config({"epoch": 1, "state_dict": state})
    assert config["arch"] == "resnet18" and config["temporal"] == "gru"
    assert (config["hidden_size"], config["num_layers"], config["outputs"]) == (8, 2, 2)
    report = zoo.import_end2you(state, zoo.build_model(**config))
    assert report.missing == [] and report.skipped == []


def test_not_an_end2you_checkpoint(tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "ours.pt")
    with pytest.raises(InputError, match="not an End2You visual model"):
        zoo.import_end2you(path, tiny_model())


# --- CLI --------------------------------------------------------------------

HEADER = "name\tarch\thead/outputs\ttraining data\tfile"


def e2y(*args):
    """``e2y-visual ARGS`` in process, through the group that reports errors."""
    return CliRunner().invoke(cli, list(args))


def test_cli_list_info_fetch(registered, places, tmp_path):
    _, path, entry = registered
    pretrained, home = places
    listed = e2y("zoo", "list")
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [
        HEADER, f"tiny_emotions\tresnet_tiny\tmultilabel/8\tsynthetic\t{path}"]
    info = e2y("zoo", "info", "tiny_emotions")
    assert info.exit_code == 0 and json.loads(info.output)["sha256"] == entry.sha256
    source = tmp_path / "copy.pt"
    path.rename(source)
    assert e2y("zoo", "list").output.splitlines()[1].endswith("\tnot fetched")
    fetched = e2y("zoo", "fetch", "tiny_emotions", "--from", str(source))
    assert fetched.exit_code == 0
    assert fetched.output == f"tiny_emotions: {home / 'tiny_emotions.pt'} (SHA-256 verified)\n"


def test_cli_zoo_errors_are_one_line_with_exit_1(registered, places, tmp_path):
    _, path, _ = registered
    pretrained, home = places
    missing = e2y("zoo", "info", "unknown-name")
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert missing.output == (
        "Error: unknown-name: no pretrained model of that name; registered: tiny_emotions "
        f"(registries: {pretrained / 'registry.json'}; {home / 'registry.json'} (absent))\n")
    again = e2y("zoo", "export", str(path), "tiny_emotions")
    assert again.exit_code == 1 and again.output == (
        f"Error: tiny_emotions: a model of that name is already registered in "
        f"{pretrained / 'registry.json'}; choose another name, or replace it (--replace, "
        "replace=True)\n")
    wrong = save_checkpoint(tiny_model(hidden_size=4), tmp_path / "wrong.pt")
    fetched = e2y("zoo", "fetch", "tiny_emotions", "--from", str(wrong), "--force")
    assert fetched.exit_code == 1 and fetched.output.startswith(f"Error: {wrong}: SHA-256")
    assert ".part" not in fetched.output


def test_cli_list_of_an_empty_zoo_says_where_it_looked(places):
    pretrained, home = places
    listed = e2y("zoo", "list")
    assert listed.exit_code == 0 and listed.output == (
        "No pretrained models registered (registries looked at: "
        f"{pretrained / 'registry.json'}, {home / 'registry.json'}).\n")


def test_an_unknown_name_says_which_registries_were_read(places):
    pretrained, home = places
    where = f"{pretrained / 'registry.json'} (absent); {home / 'registry.json'} (absent)"
    with pytest.raises(InputError) as err:
        zoo.get_weights("resnet18-fer2013-cpu")
    assert str(err.value) == ("resnet18-fer2013-cpu: no pretrained model of that name; "
                              f"registered: none (registries: {where})")
    with pytest.raises(InputError) as err:
        zoo.load_pretrained("resnet18-fer2013-cpu")
    assert str(err.value) == ("resnet18-fer2013-cpu: neither a registered pretrained model "
                              f"(registered: none; registries: {where}) nor a checkpoint file")


def test_export_goes_to_the_home_folder_beside_the_shipped_zoo(shipped, tmp_path):
    best = save_checkpoint(tiny_model(), tmp_path / "run" / "best.pt")
    entry = zoo.export(best, "mine", licence="CC0")
    assert entry.file == "mine.pt" and (shipped / "mine.pt").is_file()
    registry = json.loads((shipped / "registry.json").read_text())
    assert [m["name"] for m in registry["models"]] == ["mine"]
    assert [w.name for w in zoo.list_pretrained()] == [*SHIPPED_MODELS, "mine"]
    assert zoo.load_pretrained("mine").config["outputs"] == 8
    # the shipped registry is read, never written
    with pytest.raises(InputError, match="which export does not change"):
        zoo.export(best, "resnet18-fer2013-cpu", replace=True)
    assert [w.name for w in zoo.list_pretrained()] == [*SHIPPED_MODELS, "mine"]


def test_export_refuses_to_overwrite_a_file_without_replace(places, tmp_path):
    best = save_checkpoint(tiny_model(), tmp_path / "best.pt")
    before = best.read_bytes()
    done = e2y("zoo", "export", str(best), "new-name", "--out", str(best))
    assert done.exit_code == 1 and done.output == (
        f"Error: {best}: exists; choose another --out, or overwrite it (--replace, "
        "replace=True)\n")
    assert best.read_bytes() == before and zoo.list_pretrained() == []


def test_a_name_in_two_registries_is_refused_naming_both(registered, places):
    pretrained, home = places
    home.mkdir()
    (home / "registry.json").write_text((pretrained / "registry.json").read_text())
    with pytest.raises(InputError) as err:
        zoo.list_pretrained()
    assert str(err.value) == (f"{home / 'registry.json'}: duplicate model name 'tiny_emotions' "
                              f"(also in {pretrained / 'registry.json'})")


def test_cli_export(places, tmp_path):
    pretrained, _ = places
    best = save_checkpoint(tiny_model(), tmp_path / "best.pt")
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"valid_auc": 0.9}')
    done = e2y("zoo", "export", str(best), "tiny", "--metrics", str(metrics),
               "--description", "a test")
    assert done.exit_code == 0, done.output
    assert f"tiny: {pretrained / 'tiny.pt'}" in done.output
    assert zoo.get_weights("tiny").metrics == {"valid_auc": 0.9}
    again = e2y("zoo", "export", str(best), "tiny")
    assert again.exit_code == 1 and "already registered" in again.output
    metrics.write_text("[1, 2]")
    wrong = e2y("zoo", "export", str(best), "t2", "--metrics", str(metrics))
    assert wrong.exit_code == 1
    assert wrong.output == f"Error: --metrics {metrics}: metrics must be a JSON object\n"


def test_package_lists_its_api_for_completion_without_importing_torch():
    code = ("import sys, end2you_visual as e; names = dir(e); "
            "print(' '.join(names)); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    names, torch_loaded = done.stdout.split("\n")[:2]
    assert torch_loaded == "False"
    assert names.split() == [
        "Chain", "GenerateSettings", "InputError", "SequenceFile", "TrainConfig",
        "WindowDataset", "__version__", "audio", "build_model", "ccc", "data", "errors",
        "extract_features", "generate", "get_weights", "inference", "list_pretrained", "load_checkpoint", "load_predictions",
        "load_pretrained", "metrics", "models", "plots", "postprocess", "predict",
        "predict_sequence", "predict_video", "predict_videos", "run_test", "save_checkpoint",
        "train", "training", "zoo"]
    import end2you_visual

    for name in end2you_visual.__all__:  # each resolves, lazily
        assert getattr(end2you_visual, name) is not None
    assert end2you_visual.load_pretrained is zoo.load_pretrained
    assert end2you_visual.zoo is zoo


@pytest.mark.parametrize("name, arch, stem", [("resnet18-fer2013-cpu", "resnet18", "imagenet"),
                                              ("resnet18-small-fer2013-cpu", "resnet18", "small"),
                                              ("resnet18-half-fer2013-cpu", "resnet18_half",
                                               "small")])
def test_the_shipped_fer2013_models_load_offline_and_predict(shipped, name, arch, stem):
    (entry,) = [w for w in zoo.list_pretrained() if w.name == name]
    assert entry.label_names == ["angry", "disgusted", "fearful", "happy", "neutral", "sad",
                                 "surprised"]
    assert entry.size_bytes <= 25e6
    model = zoo.load_pretrained(name)  # checksum-verified, int8 restored
    assert model.config["grey"] and model.config["temporal"] == "none"
    assert model.config.get("stem", "imagenet") == stem and model.config["arch"] == arch
    assert model.framing.margin == 0.0 and model.config["input_size"] == 48
    frames = torch.randint(0, 256, (1, 2, 48, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        probs = model.activate(model(frames))
    assert probs.shape == (1, 2, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2))


# ------------------------------------------------- the framing of the training crops

SHIPPED_MODELS = ["resnet18-fer2013-cpu", "resnet18-small-fer2013-cpu",
                  "resnet18-half-fer2013-cpu"]
FER_FRAMING = {"margin": 0.0, "square": "max-side", "size": 48, "grey": True,
               "source": "whole-image"}


def test_the_shipped_fer2013_entry_carries_the_framing_of_its_tight_faces(shipped):
    from end2you_visual.framing import Framing

    entry = zoo.get_weights("resnet18-fer2013-cpu")
    assert entry.framing == FER_FRAMING
    # Its file predates framing: the entry (added by hand) gives it.
    assert "framing" not in read_checkpoint(zoo.locate(entry))
    model = zoo.load_pretrained("resnet18-fer2013-cpu")
    assert model.framing == Framing(**FER_FRAMING)


def test_export_carries_the_checkpoints_framing_into_the_entry(places, tmp_path):
    from end2you_visual.framing import Framing

    model = tiny_model(input_size=40)
    model.framing = Framing(margin=0.35, size=40)
    best = save_checkpoint(model, tmp_path / "run" / "best.pt")
    entry = zoo.export(best, "framed")
    stated = {"margin": 0.35, "square": "max-side", "size": 40, "grey": False,
              "source": "detected"}
    assert entry.framing == stated
    assert zoo.get_weights("framed").framing == stated  # as written in registry.json
    assert read_checkpoint(zoo.locate(entry))["framing"] == stated  # and in its file
    assert zoo.load_pretrained("framed").framing == Framing(**stated)
    # Switching to grey input says so in the framing too.
    grey = zoo.export(best, "framed-grey", grey=True)
    assert grey.framing == {**stated, "grey": True}
    # A checkpoint without one (older runs) exports an entry without one.
    plain = zoo.export(save_checkpoint(tiny_model(), tmp_path / "old.pt"), "plain")
    assert plain.framing is None and zoo.load_pretrained("plain").framing is None


def test_an_entry_and_its_file_must_agree_on_the_framing(places, tmp_path):
    from end2you_visual.framing import Framing

    pretrained, _ = places
    model = tiny_model()
    model.framing = Framing(margin=0.2)
    path = save_checkpoint(model, pretrained / "m.pt")
    zoo.register_weights("m", path)
    registry = pretrained / "registry.json"
    data = json.loads(registry.read_text())
    data["models"][0]["framing"]["margin"] = 0.0
    registry.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        zoo.load_pretrained("m")
    assert str(err.value).startswith(f"{path}: checkpoint does not match its registry entry: "
                                     "framing: registry {'margin': 0.0,")
    data["models"][0]["framing"]["margin"] = -1
    registry.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        zoo.list_pretrained()
    assert str(err.value) == (f"{registry}: registry entry 'm': framing margin must be a "
                              "number >= 0, got -1")


# ------------------------------------------------ one way to resolve a model (issue 25)

def _count_registry_reads(monkeypatch):
    """The registry files read from now on (a list, one path per read)."""
    from end2you_visual import registry

    reads, real = [], registry.read_registry_file

    def read(path):
        reads.append(path)
        return real(path)
    monkeypatch.setattr(registry, "read_registry_file", read)
    return reads


def test_resolve_model_by_name_reads_the_registry_once(registered, places, monkeypatch):
    from end2you_visual.framing import Framing
    from end2you_visual.models.checkpoint import state_dict_sha256

    model, path, entry = registered
    reads = _count_registry_reads(monkeypatch)
    resolved = zoo.resolve_model("tiny_emotions", "cpu")
    assert reads == zoo.registry_paths()  # each registry file once: pretrained, then home
    assert (resolved.title, resolved.source, resolved.path) == ("tiny_emotions", "tiny_emotions",
                                                                path)
    assert resolved.weights == entry and resolved.model.weights == entry
    assert resolved.checksum() == ("file", zoo.sha256_file(path))
    assert resolved.config == resolved.model.config and resolved.base is resolved.model
    assert not resolved.model.training and resolved.framing is None
    assert state_dict_sha256(resolved.model) == state_dict_sha256(model)
    reads.clear()
    zoo.load_pretrained("tiny_emotions")
    assert reads == zoo.registry_paths()
    # The framing comes with it (the entry's, else the file's).
    framed = tiny_model()
    framed.framing = Framing(margin=0.1)
    zoo.register_weights("framed", save_checkpoint(framed, places[0] / "framed.pt"))
    assert zoo.resolve_model("framed").framing == Framing(margin=0.1)


def test_resolve_model_of_a_checkpoint_file_and_of_a_model(registered, tmp_path):
    from end2you_visual.models.checkpoint import state_dict_sha256

    model, path, _ = registered
    other = save_checkpoint(tiny_model(hidden_size=4), tmp_path / "other.pt")
    resolved = zoo.resolve_model(other)
    assert (resolved.title, resolved.source, resolved.path, resolved.weights) == (
        str(other), str(other), other, None)
    assert resolved.checksum() == ("file", zoo.sha256_file(other))
    assert resolved.config["hidden_size"] == 4 and not resolved.model.training

    given = tiny_model().train()  # a model given is returned as it is
    resolved = zoo.resolve_model(given, "cpu")
    assert resolved.model is given and given.training
    assert (resolved.title, resolved.source, resolved.path, resolved.weights) == (
        "resnet_tiny model", None, None, None)
    assert resolved.checksum() == ("state_dict", state_dict_sha256(given))
    assert zoo.model_checksum(given) == resolved.checksum()
    assert zoo.model_checksum(given, path) == ("file", zoo.sha256_file(path))


def test_resolve_model_refuses_what_load_pretrained_refuses(registered, tmp_path):
    with pytest.raises(InputError) as resolved:
        zoo.resolve_model(tmp_path / "nothing.pt")
    with pytest.raises(InputError) as loaded:
        zoo.load_pretrained(tmp_path / "nothing.pt")
    assert str(resolved.value) == str(loaded.value)
    assert str(resolved.value).startswith(f"{tmp_path / 'nothing.pt'}: neither a registered "
                                          "pretrained model (registered: tiny_emotions;")


def test_inference_load_model_and_model_title_are_resolve_model(registered):
    from end2you_visual.inference import load_model, model_title
    from end2you_visual.models.checkpoint import state_dict_sha256

    model, _, _ = registered
    loaded = load_model("tiny_emotions", "cpu")
    assert state_dict_sha256(loaded) == state_dict_sha256(model) and not loaded.training
    assert load_model(model, "cpu") is model
    assert model_title("tiny_emotions") == "tiny_emotions"
    assert model_title(model) == zoo.model_title(model) == "resnet_tiny model"


def test_extract_names_a_registered_model_by_its_entry(registered, tmp_path, write_sequences):
    import h5py
    import numpy as np

    from end2you_visual.extract import extract_features

    _, path, entry = registered
    data = write_sequences(tmp_path / "d.h5", [3], lambda q, n, rng: (
        np.zeros((n, 32, 32, 3), np.uint8), np.zeros((n, 1))), names=["arousal"],
        kind="continuous", size=32)
    with pytest.warns(UserWarning, match="32 px crops, the model was trained on 150 px"):
        (result,) = extract_features([data], "tiny_emotions", tmp_path / "out", device="cpu")
    with h5py.File(result.output) as h5:
        assert h5.attrs["model_name"] == "tiny_emotions"
        assert h5.attrs["model_checksum"] == entry.sha256 == zoo.sha256_file(path)
        assert h5.attrs["model_checksum_of"] == "file"


def test_fetch_that_cannot_write_names_the_destination(registered, places, tmp_path):
    _, path, _ = registered
    _, home = places
    source = tmp_path / "elsewhere.pt"
    path.rename(source)
    home.write_text("a file where the home folder should be")
    with pytest.raises(InputError) as err:
        zoo.fetch("tiny_emotions", source=str(source))
    assert str(err.value) == (f"{home / 'tiny_emotions.pt'}: cannot write the fetched file: "
                              "File exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.pt", "home", "pretrained"]
