"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models gain nothing from intra-op
    threads, and on a busy 2-core machine competing OpenMP threads make each
    step 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_zoo_home(tmp_path_factory, monkeypatch):
    """Every test sees an empty zoo home folder of its own, never the user's
    ``~/.cache/end2you-visual`` (whose registry could add or shadow names)."""
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path_factory.mktemp("zoo_home")))
