"""Embeddings from the engine's own model code equal sentence-transformers on the same tiny models."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from tunelab.engine import AsyncEngine, SamplingParams
from tunelab.engine.engine import LLMEngine
from tunelab.engine.config import EngineConfig
from tunelab.engine.pooling import Pooling, read_pooling
from tunelab.errors import InvalidRequest

from helpers.st_reference import reference, save_last_token_layout

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed "
                                                         "(pip install sentence-transformers)")
TEXTS = ["hello world", "a", "the quick brown fox jumps over the lazy dog " * 3, "embeddings, please"]


def _engine(model, **cfg) -> LLMEngine:
    return LLMEngine(model, config=EngineConfig(dtype="float32", device="cpu", max_model_len=256,
                                                block_size=4, num_blocks=128, **cfg))


def _ids(engine: LLMEngine, texts: list[str]) -> list[list[int]]:
    return [list(engine.tokenizer(t)["input_ids"]) for t in texts]  # as sentence-transformers tokenizes


def _reference(model, texts=TEXTS, **kwargs) -> torch.Tensor:
    return reference(model, texts, **kwargs)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_mean_pooling_matches_sentence_transformers(tiny_models, arch):
    engine = _engine(tiny_models[arch], max_num_batched_tokens=24)  # several batches per call
    assert engine.pooling == Pooling()
    ours = torch.stack(engine.embed(_ids(engine, TEXTS)))
    torch.testing.assert_close(ours, _reference(tiny_models[arch]), atol=1e-4, rtol=1e-4)
    assert engine.scheduler.block_manager.num_free == 128  # every borrowed block came back


@pytest.fixture(scope="module")
def last_token_model(tiny_models, tmp_path_factory):
    """A sentence-transformers layout (bare backbone, lasttoken pooling, Normalize), as Qwen3-Embedding."""
    return save_last_token_layout(tiny_models["qwen2"], tmp_path_factory.mktemp("st") / "qwen-embed")


def test_sentence_transformers_layout_is_read_and_matched(last_token_model):
    pooling = read_pooling(last_token_model)
    assert pooling.modes == ("lasttoken",) and pooling.normalize and pooling.source == "sentence-transformers"
    assert json.loads((last_token_model / "config.json").read_text())["architectures"] == ["Qwen2Model"]
    engine = _engine(last_token_model)
    ours = torch.stack(engine.embed(_ids(engine, TEXTS)))
    expected = _reference(st.SentenceTransformer(str(last_token_model), device="cpu"))
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))


def test_legacy_pooling_keys_and_unsupported_modules(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    pooling = read_pooling(tmp_path)
    assert pooling.modes == ("cls", "mean") and "'2_Dense' (Dense) is not supported" in pooling.problem
    h = torch.arange(6.0).view(3, 2)
    torch.testing.assert_close(pooling.pool(h), torch.tensor([0.0, 1.0, 2.0, 3.0]))


def test_async_embeddings_run_between_generation_steps(tiny_models):
    engine = AsyncEngine(tiny_models["llama"], dtype="fp32", max_model_len=256, block_size=4, num_blocks=64)
    reference = _engine(tiny_models["llama"])
    prompts = _ids(reference, TEXTS)

    async def main():
        params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
        return await asyncio.gather(engine.embed(prompts), _drain(engine.generate("h", [5, 6, 7], params)))

    try:
        vectors, deltas = asyncio.run(main())
        torch.testing.assert_close(torch.stack(vectors), torch.stack(reference.embed(prompts)))
        assert sum(len(d.token_ids) for d in deltas) == 20
        with pytest.raises(InvalidRequest, match="unknown adapter"):
            asyncio.run(engine.embed(prompts, adapter="nope"))
        with pytest.raises(InvalidRequest, match="maximum model length"):
            asyncio.run(engine.embed([[5] * 300]))
        assert engine.stats()["kv_usage"] == 0
    finally:
        engine.shutdown()


async def _drain(stream) -> list:
    return [d async for d in stream]


@pytest.mark.parametrize("mode", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_every_pooling_mode_equals_sentence_transformers(mode):
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    torch.manual_seed(0)
    lengths = [5, 3, 1]
    hidden = torch.randn(len(lengths), max(lengths), 8)  # right-padded, as ST pads
    mask = torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])
    expected = STPooling(8, mode)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    ours = torch.stack([Pooling((mode,)).pool(hidden[i, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(ours, expected)
