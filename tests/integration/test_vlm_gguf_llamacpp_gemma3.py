"""An exported Gemma 3 VLM runs in llama.cpp's multimodal path (mtmd / clip, through llama-cpp-python).

The tiny random Gemma 3 VLM (32-px images, 16 tokens each, pool side 2) is exported at f16 with its
gemma3 mmproj; llama.cpp wraps a 32x32 image in <start_of_image> ... <end_of_image>, encodes it (its
16 image embeddings must match transformers' SigLIP + projector) and its greedy continuation, with the
image's tokens attending both ways, must equal transformers' and tunelab's engine's on the same ids.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from tunelab.export.exporter import export  # noqa: E402

pytestmark = pytest.mark.llamacpp
N_NEW = 6
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


def _llama_cpp_run(result) -> tuple[list[int | None], np.ndarray, list[int]]:
    """Prompt ids as mtmd tokenized them (None per image embedding), the image embeddings, greedy tokens."""
    from llama_cpp import mtmd_cpp as mtmd

    llm = llama_cpp.Llama(str(result.gguf), n_ctx=128, n_threads=2, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings = False, 2, False
    ctx = mtmd.mtmd_init_from_file(str(result.mmproj).encode(), llm.model, params)
    assert ctx is not None and mtmd.mtmd_support_vision(ctx) and not mtmd.mtmd_decode_use_mrope(ctx)
    pixels = _image()
    rgb = (ctypes.c_uint8 * pixels.size).from_buffer(bytearray(pixels.tobytes()))
    bitmap = mtmd.mtmd_bitmap_init(SIDE, SIDE, rgb)
    text = f"look at {mtmd.mtmd_default_marker().decode()} name the colour".encode()
    inp = mtmd.mtmd_input_text()
    inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), False, True
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        ids, image = _chunk_ids(mtmd, chunks)
        assert mtmd.mtmd_encode_chunk(ctx, image) == 0
        embeds = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(ids.count(None), llm.n_embd())).copy()
        n_past = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, 64, True, ctypes.byref(n_past)) == 0
        llm.n_tokens = n_past.value
        out = []
        for _ in range(N_NEW):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
            out.append(int(logits.argmax()))
            llm.eval([out[-1]])
        return ids, embeds, out
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(ctx)
        llm.close()


def _chunk_ids(mtmd, chunks):
    """The ids (None per image embedding) and the image chunk."""
    ids: list[int | None] = []
    image = None
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            ids += [ptr[j] for j in range(n.value)]
        else:
            ids += [None] * mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            image = chunk
    return ids, image


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
    ids, embeds, greedy = _llama_cpp_run(result)
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
