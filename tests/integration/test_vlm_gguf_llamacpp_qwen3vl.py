"""An exported Qwen3-VL runs in llama.cpp's multimodal path (mtmd / clip, through llama-cpp-python).

The tiny random Qwen3-VL (one DeepStack level: llama.cpp's qwen3vl graph cannot add one after the last
decoder layer) is exported at f16; llama.cpp tokenizes a prompt around a 128x96 image (12 image tokens, a
3x4 merged grid) and encodes it: each image token's merged row and DeepStack row must match transformers'
(f16 weights), and its greedy continuation must equal transformers' and tunelab's engine's. The
llama.cpp plumbing is test_vlm_gguf_llamacpp.py's (Qwen2.5-VL).
"""

from __future__ import annotations

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from test_vlm_gguf_llamacpp import N_NEW, _engine_greedy, _llama_cpp_run  # noqa: E402

from tunelab.export.errors import ExportError  # noqa: E402
from tunelab.export.exporter import export  # noqa: E402

pytestmark = pytest.mark.llamacpp
WIDTH, HEIGHT = 128, 96


def _image() -> np.ndarray:
    """Left half red, right half blue: the edge falls on a 32-pixel merged token's edge."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    img[:, : WIDTH // 2] = (220, 30, 30)
    img[:, WIDTH // 2:] = (30, 40, 220)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tiny_vlm import build_tiny_qwen3_vl

    root = tmp_path_factory.mktemp("qwen3vl-llamacpp")
    model = build_tiny_qwen3_vl(root / "tiny", deepstack=(1,), pixels=(8 * 1024, 16 * 1024))  # llama.cpp: >= 8
    return model, export(str(model), "gguf", "f16", out=root / "qwen3vl-f16.gguf", log=lambda _m: None)


def _transformers_run(model_dir, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """transformers' (merged | DeepStack) image rows and greedy tokens on the same ids and pixels."""
    import torch
    from PIL import Image
    from transformers import Qwen3VLForConditionalGeneration

    from tunelab.vision.preprocess import image_processor, pixel_inputs

    ref = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = ref.config.image_token_id
    extra = pixel_inputs([Image.fromarray(_image())], image_processor(model_dir))
    assert extra["image_grid_thw"].tolist() == [[1, HEIGHT // 16, WIDTH // 16]]
    seq = list(ids)
    with torch.no_grad():
        out = ref.model.get_image_features(**extra)
        embeds = torch.cat([out.pooler_output[0], *(level[0] for level in out.deepstack_features)], -1).numpy()
        for _ in range(N_NEW):
            kinds = torch.tensor([[int(t == pad) for t in seq]])
            seq.append(int(ref(input_ids=torch.tensor([seq]), mm_token_type_ids=kinds, **extra).logits[0, -1].argmax()))
    return embeds, seq[len(ids):]


def test_llama_cpp_runs_the_exported_qwen3_vl_like_transformers_and_the_engine(exported, monkeypatch):
    from transformers import AutoTokenizer

    import test_vlm_gguf_llamacpp

    model, result = exported
    ids, embeds, greedy = _llama_cpp_run(result, _image(), width=64 * 2)  # merged row + one DeepStack row
    tokenizer = AutoTokenizer.from_pretrained(model)
    start, pad, end = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    first = ids.index(None)
    assert ids.count(None) == (HEIGHT // 32) * (WIDTH // 32) == 12  # one embedding per merged 2x2 patch
    assert ids[first - 1] == start and ids[first + 12] == end
    ref_embeds, reference = _transformers_run(model, [pad if t is None else t for t in ids])
    for part, cols in (("merged", slice(0, 64)), ("DeepStack", slice(64, 128))):
        scale = float(np.abs(ref_embeds[:, cols]).max())
        assert np.abs(embeds[:, cols] - ref_embeds[:, cols]).max() < 0.01 * scale, f"{part} rows differ"
    assert greedy == reference, f"llama.cpp {greedy} != transformers {reference}"
    monkeypatch.setattr(test_vlm_gguf_llamacpp, "_image", _image)  # the engine run's image
    assert greedy == _engine_greedy(model, [pad if t is None else t for t in ids])


def test_deepstack_after_the_last_layer_is_refused_before_writing(tmp_path):
    from tiny_vlm import build_tiny_qwen3_vl

    model = build_tiny_qwen3_vl(tmp_path / "tiny")  # DeepStack after both of its 2 decoder layers
    with pytest.raises(ExportError, match="2 DeepStack levels for 2 decoder layers"):
        export(str(model), "gguf", "f16", out=tmp_path / "out" / "x.gguf", log=lambda _m: None)
    assert not (tmp_path / "out").exists()
