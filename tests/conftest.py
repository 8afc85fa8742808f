"""Shared fixtures: every test writes into its own outputs folder, never the repo's."""

from __future__ import annotations

import pytest


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """A private ``SQA_OUTPUTS`` for the test."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("SQA_OUTPUTS", str(out))
    return out
