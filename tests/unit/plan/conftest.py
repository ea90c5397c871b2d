"""Fixtures for planner tests: synthetic training examples (every position trains)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_examples() -> list:
    """16 examples of 24 token ids below the tiny vocabulary, labels = inputs."""
    from tunelab.data.tokenize import Example

    ids = [[(7 * i + 13 * j) % 500 for j in range(24)] for i in range(16)]
    return [Example(x, list(x)) for x in ids]
