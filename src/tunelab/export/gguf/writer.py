"""Write an HF model directory as GGUF with the `gguf` package's GGUFWriter.

Everything that can fail (architecture, quant, tokenizer, tensor names) is checked
while building the plan, before the first byte is written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tunelab.atomic import atomic_file
from tunelab.data.templates import ChatTemplate, resolve_template
from tunelab.export.errors import ExportError
from tunelab.export.gguf import families as fam
from tunelab.export.gguf.mixture import Mixture, model_facts, tensor_type
from tunelab.export.gguf.vocab import Vocab, build_vocab, write_vocab
from tunelab.export.quantize import encode, parse_quant
from tunelab.models.gguf_families import GGUFFamily
from tunelab.progress import progress, track

# Prefixes of multimodal checkpoints whose language model we export.
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head."))
_SKIP = ("rotary_emb.inv_freq", "vision_tower.", "multi_modal_projector.", "vision_model.", "visual.")


@dataclasses.dataclass
class Plan:
    """What will be written: family, hparams, tensor names, vocab and template."""

    model_dir: Path
    family: GGUFFamily
    hparams: dict
    tensors: list[tuple[str, str, Path]]  # (hf name, gguf name, safetensors file)
    vocab: Vocab
    template: ChatTemplate


def write_gguf(model_dir: Path, out: Path, quant: str = "f16",
               template: ChatTemplate | None = None, log: Callable[[str], None] = print) -> Path:
    """Export `model_dir` to GGUF file `out` with `quant`; returns `out`.

    `template` defaults to `resolve_template(model_dir)`, the one serving would use.
    """
    q = parse_quant(quant)
    plan = make_plan(Path(model_dir), template)
    with atomic_file(Path(out)) as tmp:
        _write(plan, tmp, q)
    log(f"wrote {out} ({q.name}, {Path(out).stat().st_size / 2**20:.1f} MiB)")
    return Path(out)


def make_plan(model_dir: Path, template: ChatTemplate | None = None) -> Plan:
    """Validate the model and map every tensor; raises before anything is written."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{config_path}: missing; not a Hugging Face model directory")
    hparams = fam.text_config(json.loads(config_path.read_text(encoding="utf-8")))
    family = fam.family_for(hparams, str(config_path))
    tensors = _map_tensors(model_dir, family, hparams)
    n_rows = _embedding_rows(model_dir, tensors)
    template = template or resolve_template(model_dir)
    return Plan(model_dir, family, hparams, tensors, build_vocab(model_dir, n_rows, template), template)


def _map_tensors(model_dir: Path, family: GGUFFamily, hp: dict) -> list[tuple[str, str, Path]]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no *.safetensors weights")
    tied = hp.get("tie_word_embeddings", family.arch == "gemma3")
    plan = []
    for file in files:
        for name in _header_names(file):
            hf = _strip_prefix(name)
            if any(s in hf for s in _SKIP) or (tied and hf == "lm_head.weight"):
                continue
            mapped = family.gguf_name(hf)
            if mapped is None:
                raise ExportError(f"{file}: tensor '{name}' has no llama.cpp name for {family.arch}")
            plan.append((name, mapped, file))
    return plan


def _header(file: Path) -> dict[str, dict]:
    """A safetensors file's header: tensor name -> {dtype, shape, data_offsets}."""
    with file.open("rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    header.pop("__metadata__", None)
    return header


def _header_names(file: Path) -> list[str]:
    return list(_header(file))


def _strip_prefix(name: str) -> str:
    for old, new in _PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _embedding_rows(model_dir: Path, tensors: list[tuple[str, str, Path]]) -> int:
    from tunelab.store.weights import tensor_shapes

    for hf, mapped, file in tensors:
        if mapped == "token_embd.weight":
            return int(tensor_shapes(file)[hf][0])
    raise ExportError(f"{model_dir}: no token embedding tensor found")


def _write(plan: Plan, path: Path, q: Mixture) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), plan.family.arch)
    writer.add_name(plan.model_dir.name)
    writer.add_file_type(q.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    fam.write_hparams(writer, plan.family, plan.hparams)
    _write_tokenizer(writer, plan)
    hp = plan.hparams
    gqa = int(hp.get("num_key_value_heads") or hp["num_attention_heads"]) != int(hp["num_attention_heads"])
    facts = model_facts([m for _h, m, _f in plan.tensors], int(hp["num_hidden_layers"]), plan.family.arch, gqa)
    for name, data in _tensors(plan, f"converting tensors to {q.name}"):
        qtype = tensor_type(q, facts, name, data.shape)
        writer.add_tensor(name, encode(data, qtype), raw_dtype=gguf.GGMLQuantizationType[qtype])
    with progress(f"writing {path.name}"):
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _write_tokenizer(writer, plan: Plan) -> None:
    write_vocab(writer, plan.vocab)
    writer.add_chat_template(plan.template.tool_aware_source())  # tool calling survives the export


def _tensors(plan: Plan, what: str) -> Iterator[tuple[str, np.ndarray]]:
    """(gguf name, float32 array) with the family's weight fixes applied, shown as progress `what`."""
    from safetensors import safe_open

    hp, n_head = plan.hparams, int(plan.hparams["num_attention_heads"])
    n_kv = int(hp.get("num_key_value_heads") or n_head)
    factors = fam.llama3_rope_factors(hp) if plan.family.arch == "llama" else None
    if factors is not None:
        yield "rope_freqs.weight", factors
    for hf, mapped, file in track(plan.tensors, what, unit="tensor"):
        with safe_open(str(file), framework="pt") as st:
            data = st.get_tensor(hf).float().numpy()
        data = plan.family.to_gguf(mapped, data, n_head, n_kv)
        yield mapped, data

