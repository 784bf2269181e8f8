"""Fused-op tests use tiny tensors: one torch thread is fastest, and extra threads spin on a busy shared machine."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
