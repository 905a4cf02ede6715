"""Shared fixtures: one tiny mock PDR1 tree per test session."""

from __future__ import annotations

import pytest

from dexdb.mock import generate

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_pdr1(tmp_path_factory):
    """The tiny mock release (all cubes), written once and treated as read-only by tests."""
    return generate(tmp_path_factory.mktemp("pdr1") / "pdr1", "tiny", TINY_SEED, log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_catalogs(tiny_pdr1, tmp_path_factory):
    """The tiny mock ingested: the published output directory (read-only for tests)."""
    from dexdb.ingest.pipeline import ingest

    out = tmp_path_factory.mktemp("catalogs") / "out"
    ingest(tiny_pdr1, out, log=lambda *_: None)
    return out
