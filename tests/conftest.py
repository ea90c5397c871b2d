"""Shared fixtures: a temporary store holding tiny random models, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

if not torch.cuda.is_available():
    # Triton kernels then run on CPU tensors through Triton's interpreter. The switch is read when
    # triton defines its own jit functions, so it must be set before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tiny_models import ARCHS, TOKENIZER_DIR, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tunelab_home(tmp_path_factory) -> Path:
    """Every test runs against a private $TUNELAB_HOME, never the user's store."""
    real = os.environ.get("TUNELAB_TEST_REAL_HOME")  # real-model tests may share a warm store
    home = Path(real) if real else tmp_path_factory.mktemp("tunelab_home")
    os.environ["TUNELAB_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """arch -> directory of a tiny random HF model with the tiny tokenizer."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: build_tiny_model(arch, root / arch) for arch in ARCHS}


@pytest.fixture(params=ARCHS)
def tiny_model(request, tiny_models) -> Path:
    """Each tiny architecture in turn."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir() -> Path:
    return TOKENIZER_DIR


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests leave artefacts worth keeping (screenshots, reports)."""
    out = Path(__file__).parent.parent / "test-output"
    out.mkdir(exist_ok=True)
    return out
