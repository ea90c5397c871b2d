"""sentence-transformers as the reference for embeddings: plain text in, mean pooling or a saved layout."""

from __future__ import annotations

from pathlib import Path

import torch


def text_backbone(model_dir: Path):
    """sentence-transformers' Transformer reading plain text (v6 would wrap it in the chat template)."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    text = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
    return Transformer(str(model_dir), modality_config=text, module_output_name="token_embeddings")


def reference(model, texts: list[str], **kwargs) -> torch.Tensor:
    """Embeddings of `texts` by a SentenceTransformer, or by mean pooling over a plain model dir."""
    import sentence_transformers as st
    from sentence_transformers.sentence_transformer.modules import Pooling

    if not isinstance(model, st.SentenceTransformer):
        backbone = text_backbone(model)
        model = st.SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "mean")],
                                       device="cpu")
    return torch.tensor(model.encode(texts, batch_size=8, **kwargs))


def save_last_token_layout(model_dir: Path, out: Path) -> Path:
    """A sentence-transformers layout like Qwen3-Embedding's: bare backbone, lasttoken pooling, Normalize."""
    import sentence_transformers as st
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    backbone = text_backbone(model_dir)
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), "lasttoken"), Normalize()]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out
