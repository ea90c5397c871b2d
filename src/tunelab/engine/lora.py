"""Multi-LoRA serving: many PEFT adapters over one base model, mixed in one batch, never merged.

For every adapted projection W (out x in) and adapter i with A_i (r x in), B_i (out x r):

    y[t] = x[t] W^T + b  +  s_i * (x[t] A_i^T) B_i^T        for tokens t of requests using i

Tokens are grouped by adapter each step (`set_batch`), so the low-rank branch is two small
matmuls per adapter present, and tokens with no adapter pay nothing. Fused projections
(qkv, gate_up) apply each adapter part to its own output slice.

Rows an adapter trained in the embedding (`lora.trainable_tokens`) are served by
engine/lora_tokens.py, per request as well.

DoRA adds a per-row magnitude m: W' = m * (W + s B A) / ||W + s B A||_row. With the row norm
precomputed at load time, y' = f * (y - b + s (x A^T) B^T) + b where f = m / norm.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tunelab.engine import lora_tokens
from tunelab.errors import InvalidRequest, TunelabError
from tunelab.models.layers import FusedLinear
from tunelab.models.loader import FUSED, vision_renamed

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.(\w+_proj)\.(lora_A|lora_B|lora_magnitude_vector)"
                  r"(?:\.[\w-]+)??(?:\.weight)?$")


class AdapterError(TunelabError):
    """An adapter directory is unreadable or uses features the engine cannot serve."""


@dataclass
class LoRAPart:
    """One adapted projection of one adapter: out slice, A (r, in), B (out, r), scale, DoRA factor."""

    out: slice
    a: torch.Tensor
    b: torch.Tensor
    scale: float
    dora: torch.Tensor | None = None  # (out,) m / ||W + sBA|| per row


class LoRALinear(nn.Module):
    """A base linear plus the adapters' low-rank branches, applied per group of rows."""

    def __init__(self, base: nn.Linear, manager: "LoRAManager"):
        super().__init__()
        self.base = base
        self.manager = manager
        self.parts: dict[str, list[LoRAPart]] = {}  # adapter name -> its parts in this layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (T, out)
        for name, rows in self.manager.groups:
            parts = self.parts.get(name)
            if not parts:
                continue
            xs = x[rows]  # gathered once for all the parts of a fused projection
            for part in parts:
                delta = ((xs @ part.a.T) @ part.b.T) * part.scale  # (t, out_part)
                if part.dora is None:
                    y[rows, part.out] += delta
                else:
                    y[rows, part.out] = _dora(y[rows, part.out], delta, part, self.base.bias)
        return y


def _dora(y: torch.Tensor, delta: torch.Tensor, part: LoRAPart, bias) -> torch.Tensor:
    b = bias[part.out] if bias is not None else 0
    return part.dora * (y - b + delta) + b


class LoRAManager:
    """Loads adapters into the model's LoRALinear layers and routes batch rows to them."""

    def __init__(self, model: nn.Module, max_loras: int = 8, max_rank: int = 64):
        self.model = model
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.layers: dict[str, LoRALinear] = {}  # our module name -> wrapped layer
        self.adapters: dict[str, Path] = {}
        self.token_rows: dict[str, lora_tokens.TokenRows] = {}  # adapters that trained embedding rows
        self.groups: list[tuple[str, slice | torch.Tensor]] = []  # set per step

    def names(self) -> list[str]:
        return list(self.adapters)

    def add(self, name: str, path: str | Path) -> None:
        """Load a PEFT adapter dir (adapter_config.json + adapter_model.safetensors) as `name`."""
        path = _adapter_dir(Path(path))
        cfg = _read_config(path)  # the config's problems first: they name what to change
        self.add_weights(name, _load_weights(path), cfg, path)

    def add_weights(self, name: str, weights: dict[str, torch.Tensor], cfg: dict, where: str | Path) -> None:
        """Install adapter `name` from in-memory PEFT tensors and adapter config (as saved);
        `where` names it in errors. GRPO rollouts take the policy's current LoRA this way."""
        if name not in self.adapters and len(self.adapters) >= self.max_loras:
            raise AdapterError(f"max_loras is {self.max_loras}; remove an adapter before adding '{name}'")
        self._wrap()
        cfg = check_config(cfg, where)
        rows = lora_tokens.token_rows(weights, cfg, where, AdapterError, self.model.spec.hidden_size)
        lora = {k: t for k, t in weights.items() if not lora_tokens.is_token_rows_key(k)}
        parts = self._parts(lora, cfg, Path(where))
        if rows is not None:
            self._wrap_embedding(where)
        self.remove(name)
        for module, module_parts in parts.items():
            self.layers[module].parts[name] = module_parts
        if rows is not None:
            self.token_rows[name] = rows
        self.adapters[name] = Path(where)

    def remove(self, name: str) -> None:
        """Forget adapter `name` (no error if it is not loaded)."""
        for layer in self.layers.values():
            layer.parts.pop(name, None)
        self.adapters.pop(name, None)
        self.token_rows.pop(name, None)

    def set_batch(self, items: list[tuple[str | None, int, int]], num_rows: int,
                  device: torch.device | None = None) -> None:
        """Group flat batch rows by adapter from (adapter, start, length) per scheduled item."""
        rows: dict[str, list[int]] = {}
        for adapter, start, length in items:
            if adapter is not None:
                rows.setdefault(adapter, []).extend(range(start, start + length))
        self.groups = [(name, _rows(r, device)) for name, r in rows.items()]

    def logits_patch(self, adapter_rows: list[tuple[str | None, int, int]]):
        """For a step whose requests use an adapter with trained token rows of a tied output layer,
        a function (logits (N, V), hidden (N, H), sample_rows) that writes those rows' columns; else None."""
        table = {n: r for n, r in self.token_rows.items() if any(a == n for a, _, _ in adapter_rows)}
        if not table or not self.model.spec.tie_embeddings:  # untied: the output rows never trained
            return None
        softcap = getattr(self.model.spec, "final_softcap", None)

        def patch(logits: torch.Tensor, hidden: torch.Tensor, sample_rows: torch.Tensor) -> None:
            owners = lora_tokens.row_owners(sample_rows, adapter_rows)
            lora_tokens.patch_logits(logits, hidden, owners, table, softcap)
        return patch

    def _embedding(self) -> nn.Module:
        return self.model.get_submodule("model.embed_tokens")

    def _wrap_embedding(self, where) -> None:
        """Swap the input embedding for one that serves token rows, once."""
        try:
            embed = self._embedding()
        except AttributeError:
            raise AdapterError(f"{where}: trained token rows, but this model has no model.embed_tokens") from None
        if not isinstance(embed, lora_tokens.TokenRowsEmbedding):
            self.model.model.embed_tokens = lora_tokens.TokenRowsEmbedding(embed, self)

    # ---- loading ---------------------------------------------------------------------------

    def _wrap(self) -> None:
        """Swap target linears for LoRALinear once; with no adapter in a batch they cost a loop check."""
        if self.layers:
            return
        for name, module in list(self.model.named_modules()):
            leaf = name.rpartition(".")[2]
            if leaf in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj") and name.startswith("model."):
                # (a VLM's vision tower, `visual.`, has a down_proj too: adapters serve the language model)
                parent = self.model.get_submodule(name.rpartition(".")[0])
                wrapped = LoRALinear(module, self)
                setattr(parent, leaf, wrapped)
                self.layers[name] = wrapped

    def _parts(self, weights: dict[str, torch.Tensor], cfg: dict, path: Path) -> dict[str, list[LoRAPart]]:
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            m = _KEY.match(key)
            if not m:
                raise AdapterError(f"{path}: unexpected tensor '{key}' (only LoRA/DoRA on linear layers is supported)")
            grouped.setdefault(vision_renamed(f"{m.group(1)}.{m.group(2)}"), {})[m.group(3)] = tensor
        out: dict[str, list[LoRAPart]] = {}
        for module, tensors in grouped.items():
            ours, part = self._part(path, cfg, module, tensors)
            out.setdefault(ours, []).append(part)
        return out

    def _part(self, path: Path, cfg: dict, module: str, t: dict) -> tuple[str, LoRAPart]:
        parent, _, proj = module.rpartition(".")
        ours = f"{parent}.{FUSED.get(proj, proj)}"
        base = self._base_linear(ours, path, module)
        out = base.slices[proj] if isinstance(base, FusedLinear) else slice(0, base.out_features)
        a, b = t.get("lora_A"), t.get("lora_B")
        if a is None or b is None:
            raise AdapterError(f"{path}: '{module}' lacks lora_A or lora_B")
        rank = a.shape[0]
        if rank > self.max_rank:
            raise AdapterError(f"{path}: rank {rank} exceeds max_lora_rank {self.max_rank}")
        w = base.weight
        part = LoRAPart(out, a.to(w), b.to(w), _scale(cfg, proj, rank))
        if "lora_magnitude_vector" in t:
            part.dora = _dora_factor(w[out], part, t["lora_magnitude_vector"])
        return ours, part

    def _base_linear(self, ours: str, path: Path, module: str) -> nn.Linear:
        if ours not in self.layers:
            raise AdapterError(f"{path}: adapter targets '{module}', which this model does not have")
        return self.layers[ours].base


def _rows(rows: list[int], device: torch.device | None) -> slice | torch.Tensor:
    """A slice when the rows are one contiguous run (no gather copy), else an index tensor on
    the model's device (not copied there again by every layer)."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return torch.tensor(rows, dtype=torch.long, device=device)


def _dora_factor(w: torch.Tensor, part: LoRAPart, magnitude: torch.Tensor) -> torch.Tensor:
    merged = w.float() + part.scale * (part.b.float() @ part.a.float())  # (out, in)
    return (magnitude.float() / merged.norm(dim=1)).to(w.dtype)


def _scale(cfg: dict, proj: str, rank: int) -> float:
    alpha = cfg.get("alpha_pattern", {}).get(proj, cfg.get("lora_alpha", rank))
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def _adapter_dir(path: Path) -> Path:
    """Accept an adapter dir or a run dir (runs/NAME with adapter/ inside)."""
    from tunelab.rundir import Run

    path = Run(path).adapter_dir or path  # a run folder names its adapter/ (the run dir owner knows where)
    if not (path / "adapter_config.json").is_file():
        raise InvalidRequest(f"{path}: no adapter_config.json (not a PEFT adapter directory)", param="adapter")
    if not (path / "adapter_model.safetensors").is_file():
        raise InvalidRequest(f"{path}: no adapter_model.safetensors", param="adapter")
    return path


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    file = path / "adapter_model.safetensors"
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - SafetensorError: empty, garbage or truncated
        raise AdapterError(f"{file}: not a readable safetensors file ({err})") from None


def _read_config(path: Path) -> dict:
    return check_config(json.loads((path / "adapter_config.json").read_text()), path)


def check_config(cfg: dict, path: str | Path) -> dict:
    """`cfg` (an adapter_config.json's content) when the engine can serve it; else AdapterError."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}/adapter_config.json: peft_type '{cfg['peft_type']}' is not LoRA")
    if cfg.get("task_type") == "SEQ_CLS":  # before modules_to_save: merging would not help here
        from tunelab.errors import RewardModelError

        raise RewardModelError(f"{path}/adapter_config.json", "served as an adapter")
    if cfg.get("modules_to_save"):
        raise AdapterError(f"{path}/adapter_config.json: modules_to_save {cfg['modules_to_save']} "
                           "is not supported for serving; merge the adapter instead")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise AdapterError(f"{path}/adapter_config.json: LoRA bias terms are not supported")
    return cfg
