"""An exported Gemma 3 VLM runs in llama.cpp's multimodal path (mtmd / clip, through llama-cpp-python).

The tiny random Gemma 3 VLM (32-px images, 16 tokens each, pool side 2) is exported at f16 with its
gemma3 mmproj; llama.cpp wraps a 32x32 image in <start_of_image> ... <end_of_image>, encodes it (its
16 image embeddings must match transformers' SigLIP + projector) and its greedy continuation, with the
image's tokens attending both ways, must equal transformers' and tunelab's engine's on the same ids. The
llama.cpp plumbing is test_vlm_gguf_llamacpp.py's (Qwen2.5-VL).
"""

from __future__ import annotations

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from test_vlm_gguf_llamacpp import N_NEW, _llama_cpp_run  # noqa: E402

from tunelab.export.exporter import export  # noqa: E402

pytestmark = pytest.mark.llamacpp
SIDE = 32


def _image() -> np.ndarray:
    """Left half red, right half blue, at the tower's own size (no resampling on either side)."""
    img = np.zeros((SIDE, SIDE, 3), np.uint8)
    img[:, : SIDE // 2] = (220, 30, 30)
    img[:, SIDE // 2:] = (30, 40, 220)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tiny_vlm import build_tiny_gemma3_vlm

    root = tmp_path_factory.mktemp("g3-llamacpp")
    model = build_tiny_gemma3_vlm(root / "tiny-gemma3-vl")
    return model, export(str(model), "gguf", "f16", out=root / "g3-f16.gguf", log=lambda _m: None)


def _transformers_run(model_dir, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    import torch
    from PIL import Image
    from transformers import Gemma3ForConditionalGeneration

    from tunelab.vision.preprocess import image_processor, pixel_inputs

    ref = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    soft = ref.config.image_token_id
    extra = pixel_inputs([Image.fromarray(_image())], image_processor(model_dir))
    seq = list(ids)
    with torch.no_grad():
        embeds = ref.model.get_image_features(**extra).pooler_output[0].numpy()
        for _ in range(N_NEW):
            kinds = torch.tensor([[int(t == soft) for t in seq]])
            seq.append(int(ref(input_ids=torch.tensor([seq]), token_type_ids=kinds, **extra).logits[0, -1].argmax()))
    return embeds, seq[len(ids):]


def test_llama_cpp_runs_the_exported_gemma3_vlm_like_transformers_and_the_engine(exported):
    from transformers import AutoTokenizer

    model, result = exported
    assert result.mmproj is not None and result.mmproj.name == f"mmproj-{result.gguf.name}"
    ids, embeds, greedy = _llama_cpp_run(result, _image(), mrope=False)
    tokenizer = AutoTokenizer.from_pretrained(model)
    boi, soft, eoi = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<image_soft_token>", "<end_of_image>"])
    first = ids.index(None)
    assert ids.count(None) == 16 and ids[first - 1] == boi and ids[first + 16] == eoi
    ids = [soft if t is None else t for t in ids]
    ref_embeds, reference = _transformers_run(model, ids)
    scale = float(np.abs(ref_embeds).max())
    assert np.abs(embeds - ref_embeds).max() < 0.01 * scale, "llama.cpp's image embeddings differ from transformers'"
    print(f"image embeddings: max abs diff {np.abs(embeds - ref_embeds).max():.2e} (scale {scale:.2f})")
    assert greedy == reference, f"llama.cpp {greedy} != transformers {reference}"
    assert greedy == _engine_greedy(model, ids)


def _engine_greedy(model_dir, ids: list[int]) -> list[int]:
    from PIL import Image

    from tunelab.engine.config import SamplingParams
    from tunelab.engine.llm import LLM

    llm = LLM(model_dir, dtype="fp32", device="cpu", max_model_len=128, block_size=4, num_blocks=64)
    prompt = {"prompt_token_ids": ids, "multi_modal_data": {"image": Image.fromarray(_image())}}
    out = llm.generate(prompt, SamplingParams(max_tokens=N_NEW, temperature=0, ignore_eos=True), use_tqdm=False)
    return list(out[0].outputs[0].token_ids)
