"""GGUF export of a vision-language model: Qwen2.5-VL becomes llama.cpp's `qwen2vl` language model plus
its mmproj file (read back here with the gguf package; llama.cpp itself runs them in
tests/integration/test_vlm_gguf_llamacpp.py). What llama.cpp cannot run is refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunelab.export.errors import ExportError
from tunelab.export.exporter import export


@pytest.fixture(scope="module")
def vlm_112(tiny_vlm, tmp_path_factory):
    from tiny_vlm import llamacpp_ready

    return llamacpp_ready(tiny_vlm, tmp_path_factory.mktemp("vlm112") / "tiny-qwen2.5-vl")


def _fields(path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return ({k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.")},
            {t.name: np.array(t.data) for t in reader.tensors})


def test_qwen25_vl_exports_the_language_model_and_its_mmproj(vlm_112, tmp_path):
    from safetensors.numpy import load_file

    result = export(str(vlm_112), "gguf", "f16", out=tmp_path / "vlm.gguf", log=lambda _m: None)
    assert result.mmproj == tmp_path / "mmproj-vlm.gguf"
    text_keys, text_tensors = _fields(result.gguf)
    assert text_keys["general.architecture"] == "qwen2vl"
    assert text_keys["qwen2vl.rope.dimension_sections"] == [2, 3, 3, 0]
    assert not any(name.startswith("v.") or "visual" in name for name in text_tensors)
    keys, tensors = _fields(result.mmproj)
    assert keys["general.architecture"] == "clip" and keys["general.type"] == "mmproj"
    assert keys["clip.projector_type"] == "qwen2.5vl_merger"
    assert (keys["clip.vision.n_wa_pattern"], keys["clip.vision.block_count"], keys["clip.vision.projection_dim"]) \
        == (2, 2, 64)
    hf = load_file(str(vlm_112 / "model.safetensors"))
    conv = hf["visual.patch_embed.proj.weight"]  # (out, in, t=2, h, w) -> two 2D kernels
    np.testing.assert_allclose(tensors["v.patch_embd.weight"], conv[:, :, 0], atol=1e-3)
    np.testing.assert_allclose(tensors["v.patch_embd.weight.1"], conv[:, :, 1], atol=1e-3)
    qkv = hf["visual.blocks.1.attn.qkv.weight"]
    np.testing.assert_allclose(tensors["v.blk.1.attn_v.weight"], qkv[64:], atol=1e-3)
    np.testing.assert_array_equal(tensors["mm.2.bias"], hf["visual.merger.mlp.2.bias"])
    assert {"v.post_ln.weight", "mm.0.weight", "v.blk.0.ffn_gate.weight", "v.blk.1.ln2.weight"} <= set(tensors)


def _refused(spec, dest, fmt, match):
    with pytest.raises(ExportError, match=match):
        export(str(spec), fmt, "q8_0", out=dest, log=lambda _m: None)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())


def test_a_window_llama_cpp_does_not_run_is_refused_before_writing(tiny_vlm, tmp_path):
    _refused(tiny_vlm, tmp_path / "out" / "vlm.gguf", "gguf",
             r"config\.json: vision_config\.window_size is 56, but llama\.cpp's clip graph .* fixes it at 112")


def test_ollama_format_of_a_vlm_is_refused_before_writing(vlm_112, tmp_path):
    _refused(vlm_112, tmp_path / "out" / "vlm-ollama", "ollama",
             r"config\.json: qwen2_5_vl is a vision-language model; --format ollama is refused")


def test_a_vlm_family_without_mmproj_support_is_refused(tmp_path):
    model = tmp_path / "llava"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {}}))
    _refused(model, tmp_path / "out" / "vlm.gguf", "gguf",
             r"config\.json: llava is a vision-language model whose mmproj file tunelab does not write "
             r"\(supported: qwen2_5_vl, gemma3, qwen3_vl\)")


def test_a_lora_run_on_the_vlm_exports_its_merged_weights(vlm_112, tmp_path):
    """The adapter (on the language model and the vision tower) is folded in before both files are written."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.numpy import load_file

    from helpers.run_factory import write_metrics, default_metrics, write_status
    from tunelab.vision.training import load_vision_model

    torch.manual_seed(0)
    model = load_vision_model(vlm_112, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=r".*\.(q_proj|qkv)$", init_lora_weights=False))
    run = tmp_path / "run"
    lora.save_pretrained(run / "adapter")
    write_status(run, vlm_112)
    write_metrics(run, default_metrics())
    result = export(str(run), "gguf", "f16", out=tmp_path / "run.gguf", log=lambda _m: None)
    _keys, tensors = _fields(result.mmproj)
    merged = lora.merge_and_unload().state_dict()
    qkv = merged["model.visual.blocks.0.attn.qkv.weight"].numpy()
    assert not np.allclose(qkv, load_file(str(vlm_112 / "model.safetensors"))["visual.blocks.0.attn.qkv.weight"])
    np.testing.assert_allclose(tensors["v.blk.0.attn_q.weight"], qkv[:32], atol=2e-3)
    text = _fields(result.gguf)[1]["blk.1.attn_q.weight"]
    np.testing.assert_allclose(text, merged["model.language_model.layers.1.self_attn.q_proj.weight"].numpy(), atol=2e-3)


def test_gemma3_exports_its_gemma3_mmproj(tiny_gemma3_vlm, tmp_path):
    """Keys and tensors as llama.cpp's converter writes them (llama.cpp runs the pair in
    tests/integration/test_vlm_gguf_llamacpp_gemma3.py): pool side 2 written as the scale factor, the
    projector's RMSNorm gain stored as 1 + w."""
    from safetensors.torch import load_file

    result = export(str(tiny_gemma3_vlm), "gguf", "f16", out=tmp_path / "g3.gguf", log=lambda _m: None)
    keys, tensors = _fields(result.mmproj)
    assert keys["clip.projector_type"] == "gemma3" and keys["clip.vision.projector.scale_factor"] == 2
    assert keys["clip.vision.block_count"] == 2 and keys["clip.vision.projection_dim"] == 64
    norm = load_file(str(tiny_gemma3_vlm / "model.safetensors"))["multi_modal_projector.mm_soft_emb_norm.weight"]
    np.testing.assert_allclose(tensors["mm.soft_emb_norm.weight"], norm.numpy() + 1, rtol=1e-6)
    assert {"v.patch_embd.weight", "v.position_embd.weight", "v.blk.1.ffn_down.weight", "v.post_ln.weight",
            "mm.input_projection.weight"} <= set(tensors)


def test_a_gemma3_pool_llama_cpp_cannot_run_is_refused(tiny_gemma3_vlm, tmp_path):
    import shutil

    model = shutil.copytree(tiny_gemma3_vlm, tmp_path / "g3-9")
    config = json.loads((model / "config.json").read_text())
    config["mm_tokens_per_image"] = 9  # 3x3 does not pool an 8x8 patch grid
    (model / "config.json").write_text(json.dumps(config))
    _refused(model, tmp_path / "out" / "g3.gguf", "gguf",
             r"config\.json: mm_tokens_per_image 9 does not pool the 8x8 patch grid evenly")
