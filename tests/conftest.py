"""Shared fixtures: one small synthetic release per session, and mutable copies for bad-input tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from suite.data.synthetic import SyntheticSpec, generate

# Small enough to write in a few seconds, large enough for every quirk to appear.
TEST_SPEC = SyntheticSpec(casme2_subjects=4, casme2_clips=24, samm_subjects=4, samm_clips=24, frames=(8, 12))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, seed=3, spec=TEST_SPEC)
    return out


@pytest.fixture
def release_copy(synthetic, tmp_path):
    """A private copy of one release folder that a test may damage."""
    def copy(dataset: str) -> Path:
        name = {"casme2": "CASME2", "samm": "SAMM"}[dataset]
        dst = tmp_path / name
        shutil.copytree(synthetic / name, dst)
        return dst
    return copy
