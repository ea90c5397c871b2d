"""Fixtures for vision tests: a tiny random Qwen2.5-VL and a tiny random Gemma 3 VLM, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    from tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_gemma3_vlm(tmp_path_factory):
    from tiny_vlm import build_tiny_gemma3_vlm

    return build_tiny_gemma3_vlm(tmp_path_factory.mktemp("vlm") / "tiny-gemma3-vl")
