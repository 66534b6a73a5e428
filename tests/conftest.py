"""Shared fixtures: the real datasets in ../shared (skipped when absent) and a real local broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.lab.broker import LocalBroker

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TAOBAO = DATASETS / "taobao-userbehavior-sample" / "UserBehavior_head.csv"
MOVIELENS = DATASETS / "movielens-100k"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason when a shared dataset is not checked out beside the repo."""
    if not path.exists():
        pytest.skip(f"dataset not available: {path} (clone ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def taobao_path() -> Path:
    return require(TAOBAO)


@pytest.fixture(scope="session")
def movielens_path() -> Path:
    return require(MOVIELENS)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A real Kafka-wire-compatible broker (Tansu) on a free loopback port, for the whole session."""
    with LocalBroker() as b:
        yield b
