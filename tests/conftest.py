"""Shared fixtures: every test writes into its own outputs folder, never the repo's."""

from __future__ import annotations

import pytest


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """A private ``SQA_OUTPUTS`` for the test."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("SQA_OUTPUTS", str(out))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: on a busy 2-core machine OpenMP
    spinning makes small ops 10-40x slower (use with ``pytestmark = pytest.mark.usefixtures``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
