"""An exported Qwen2.5-VL runs in llama.cpp's multimodal path (mtmd / clip, through llama-cpp-python).

The tiny random VLM (with the 112-pixel window llama.cpp hard-codes) is exported at f16; llama.cpp loads
the language model and the mmproj file, tokenizes a prompt around a 112x84 image (12 image tokens, a 3x4
merged grid) and encodes the image: its 12 image embeddings must match transformers' vision tower and
merger (f16 weights), and its greedy continuation must equal transformers' and tunelab's engine's token for
token on the same ids and pixels.
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
WIDTH, HEIGHT = 112, 84


def _image() -> np.ndarray:
    """Left half red, right half blue: no resampling question at a block edge of 28 pixels."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    img[:, : WIDTH // 2] = (220, 30, 30)
    img[:, WIDTH // 2:] = (30, 40, 220)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tiny_vlm import build_tiny_vlm, llamacpp_ready

    root = tmp_path_factory.mktemp("vlm-llamacpp")
    model = llamacpp_ready(build_tiny_vlm(root / "tiny"), root / "tiny-112")
    return model, export(str(model), "gguf", "f16", out=root / "vlm-f16.gguf", log=lambda _m: None)


def _llama_cpp_run(result, pixels: np.ndarray | None = None, width: int | None = None, mrope: bool = True
                   ) -> tuple[list[int | None], np.ndarray, list[int]]:
    """Prompt ids as mtmd tokenized them (None for each image embedding), llama.cpp's image embeddings
    (`width` wide, the LM's width unless given) and its greedy tokens, for `pixels` (HxWx3, `_image()`);
    `mrope`: whether the family decodes with M-RoPE positions (Qwen) or plain ones (Gemma 3)."""
    from llama_cpp import mtmd_cpp as mtmd

    llm = llama_cpp.Llama(str(result.gguf), n_ctx=128, n_threads=2, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings = False, 2, False
    ctx = mtmd.mtmd_init_from_file(str(result.mmproj).encode(), llm.model, params)
    assert ctx is not None and mtmd.mtmd_support_vision(ctx) and mtmd.mtmd_decode_use_mrope(ctx) == mrope
    pixels = _image() if pixels is None else pixels
    rgb = (ctypes.c_uint8 * pixels.size).from_buffer(bytearray(pixels.tobytes()))
    bitmap = mtmd.mtmd_bitmap_init(pixels.shape[1], pixels.shape[0], rgb)
    text = f"look at {mtmd.mtmd_default_marker().decode()} name the colour".encode()
    inp = mtmd.mtmd_input_text()
    inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), False, True
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        ids, image = _chunk_ids(mtmd, chunks)
        assert mtmd.mtmd_encode_chunk(ctx, image) == 0
        shape = (ids.count(None), width or llm.n_embd())
        embeds = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=shape).copy()
        n_past = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, 64, True, ctypes.byref(n_past)) == 0
        llm.n_tokens = n_past.value  # M-RoPE: an image advances positions by max(grid h, w), not its tokens
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
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tunelab.vision.preprocess import image_processor, pixel_inputs

    ref = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = ref.config.image_token_id
    extra = pixel_inputs([Image.fromarray(_image())], image_processor(model_dir))
    assert extra["image_grid_thw"].tolist() == [[1, HEIGHT // 14, WIDTH // 14]]
    seq = list(ids)
    with torch.no_grad():
        embeds = ref.model.get_image_features(**extra).pooler_output[0].numpy()
        for _ in range(N_NEW):
            kinds = torch.tensor([[int(t == pad) for t in seq]])
            seq.append(int(ref(input_ids=torch.tensor([seq]), mm_token_type_ids=kinds, **extra).logits[0, -1].argmax()))
    return embeds, seq[len(ids):]


def test_llama_cpp_runs_the_exported_vlm_like_transformers_and_the_engine(exported):
    from transformers import AutoTokenizer

    model, result = exported
    ids, embeds, greedy = _llama_cpp_run(result)
    tokenizer = AutoTokenizer.from_pretrained(model)
    start, pad, end = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    first = ids.index(None)
    assert ids.count(None) == (HEIGHT // 28) * (WIDTH // 28) == 12  # one embedding per merged 2x2 patch
    assert ids[first - 1] == start and ids[first + 12] == end  # mtmd wraps the image as Qwen's processor does
    ref_embeds, reference = _transformers_run(model, [pad if t is None else t for t in ids])
    scale = float(np.abs(ref_embeds).max())
    assert np.abs(embeds - ref_embeds).max() < 0.01 * scale, "llama.cpp's image embeddings differ from transformers'"
    assert greedy == reference, f"llama.cpp {greedy} != transformers {reference}"
    assert greedy == _engine_greedy(model, [pad if t is None else t for t in ids])


def _engine_greedy(model_dir, ids: list[int]) -> list[int]:
    from PIL import Image

    from tunelab.engine.config import SamplingParams
    from tunelab.engine.llm import LLM

    llm = LLM(model_dir, dtype="fp32", device="cpu", max_model_len=128, block_size=4, num_blocks=64)
    prompt = {"prompt_token_ids": ids, "multi_modal_data": {"image": Image.fromarray(_image())}}
    out = llm.generate(prompt, SamplingParams(max_tokens=N_NEW, temperature=0, ignore_eos=True), use_tqdm=False)
    return list(out[0].outputs[0].token_ids)
