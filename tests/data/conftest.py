"""Shared fixtures of the synthetic-data tests (small sizes keep the suite fast)."""

from __future__ import annotations

import pytest

from napari_diffseg.data import SyntheticConfig, SyntheticSequence, generate_sequence


@pytest.fixture(scope="session")
def seq_with_wire() -> SyntheticSequence:
    """A 96 x 96 x 24 sequence with a guidewire."""
    return generate_sequence(SyntheticConfig(size=96, frames=24, seed=3, guidewire=True))


@pytest.fixture(scope="session")
def seqs_by_seed() -> list[SyntheticSequence]:
    """Three 80 x 80 x 20 sequences of different seeds."""
    return [generate_sequence(SyntheticConfig(size=80, frames=20, seed=s), name=f"seq{s:03d}")
            for s in range(3)]
