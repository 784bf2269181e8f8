"""Fixtures shared by every test package: tiny offline models and a chat data set, and one torch thread."""

from __future__ import annotations

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
def one_torch_thread():
    """Tiny models run fastest on one thread, and a busy shared machine makes extra threads spin."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
