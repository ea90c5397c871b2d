"""Fixtures for vision tests: a tiny random Qwen2.5-VL, Qwen3-VL and Gemma 3 VLM, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    from tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory):
    from tiny_vlm import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("vlm") / "tiny-qwen3-vl")


@pytest.fixture(scope="session")
def tiny_gemma3_vlm(tmp_path_factory):
    from tiny_vlm import build_tiny_gemma3_vlm

    return build_tiny_gemma3_vlm(tmp_path_factory.mktemp("vlm") / "tiny-gemma3-vl")
