"""Fixtures shared by every test package: tiny offline models and a chat data set, one torch thread, and the
benchmark data root for the tests that read the real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.train.tiny import save_tiny, write_rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "qwen2", kind="qwen2")


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> str:
    return write_rows(tmp_path_factory.mktemp("data") / "chat.jsonl")


@pytest.fixture(autouse=True)
def one_torch_thread(request):
    """Tiny models run fastest on one thread, and a busy shared machine makes extra threads spin. The real-model
    tests (marked slow) keep every thread, as they did before this fixture served all packages."""
    import torch

    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def real_data_root() -> Path:
    """The benchmark data root (`eaft.data_root`: EAFT_DATA, else ../shared/data beside the repository), for tests
    of the real files. Without one such a test is skipped, except under CI=true, where it fails."""
    from eaft.data_root import DataRootError, find_data_root

    try:
        return find_data_root()
    except DataRootError as err:
        missing = str(err)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true: this test reads the benchmark data, and {missing}", pytrace=False)
    pytest.skip(f"needs the benchmark data (CI=true makes it required): {missing}")


@pytest.fixture
def stand_in_data_root(tmp_path, monkeypatch) -> Path:
    """EAFT_DATA pointed at an empty folder: shipped suites and experiments load and validate (their paths resolve)
    without the benchmark files, for tests of their structure only."""
    root = tmp_path / "stand_in_data"
    root.mkdir()
    monkeypatch.setenv("EAFT_DATA", str(root))
    return root
