"""The DistributedDataParallel path: two CPU processes with gloo, as torchrun runs them."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from end2you_visual.models import read_checkpoint
from end2you_visual.training import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, config, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(**config))
    try:
        assert trainer.dist.world_size == world_size and trainer.dist.rank == rank
        assert isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel)
        seen = [list(trainer.train_sampler), len(trainer.indices)]
        trainer.fit()
        torch.save({"state": trainer.model.state_dict(), "seen": seen}, f"{out}/rank{rank}.pt")
    finally:
        trainer.close()


def test_two_processes_with_gloo(tmp_path, write_continuous):
    data = tmp_path / "data"
    write_continuous(data / "a.h5", [20, 17, 30, 24], subjects=["p1", "p2", "p3", "p4"])
    write_continuous(data / "b.h5", [25, 12, 16], subjects=["p5", "p6", "p7"], seed=1)
    config = dict(train=[str(data)], out_dir=str(tmp_path / "run"), window=8, epochs=2,
                  batch_size=2, valid_fraction=0.3, arch="resnet_tiny", hidden_size=8,
                  num_layers=1, num_workers=0, progress=False, tensorboard=False, lr=1e-3)
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # DDP kept the weights in step; BatchNorm statistics are rank 0's on both
    # (broadcast before validation), as in the saved checkpoint.
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    (seen0, n), (seen1, _) = ranks[0]["seen"], ranks[1]["seen"]
    # Each process trains on its share; together they cover every window, one
    # window repeated at most to even out the shares (as DistributedSampler).
    assert len(seen0) == len(seen1) == -(-n // 2)
    assert sorted(set(seen0) | set(seen1)) == list(range(n))

    state = read_checkpoint(tmp_path / "run" / "last.pt")["training"]
    assert state["epoch"] == 2 and state["world_size"] == 2 and len(state["rng"]) == 2
    last = state["history"][-1]
    # The validation metrics gathered over both processes equal a one-process
    # validation of the saved model.
    single = Trainer(TrainConfig(**{**config, "resume": True}))
    try:
        assert not single.dist.enabled
        metrics = single.validate()
    finally:
        single.close()
    assert metrics["ccc"] == pytest.approx(last["valid_ccc"], abs=1e-5)
    assert metrics["loss"] == pytest.approx(last["valid_loss"], abs=1e-5)


def _av_rows(q, n, rng):
    frames = rng.integers(0, 256, (n, 16, 16, 3), dtype="uint8")
    return frames, rng.uniform(0, 1, (n, 2))


def _av_audio(q, n, rng):
    return rng.uniform(-1, 1, n * 640).astype("float32")


def test_an_audiovisual_model_with_a_frozen_cnn_in_two_processes(tmp_path, write_sequences):
    data = tmp_path / "data"
    write_sequences(data / "av.h5", [20, 17, 30, 24, 19], _av_rows, names=["arousal", "valence"],
                    kind="continuous", size=16, audio=_av_audio, audio_rate=16000)
    config = dict(train=[str(data)], out_dir=str(tmp_path / "run"), window=8, epochs=1,
                  batch_size=2, valid_fraction=0.3, arch="resnet_tiny", hidden_size=8,
                  num_layers=1, num_workers=0, progress=False, tensorboard=False, lr=1e-3,
                  modality="audiovisual", projection=4, freeze_visual=True)
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["state"] for r in (0, 1)]
    assert any(k.startswith("audio.") for k in ranks[0])
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name
    assert read_checkpoint(tmp_path / "run" / "last.pt")["training"]["world_size"] == 2
