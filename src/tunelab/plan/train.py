"""The memory a training run needs, term by term, from a model shape and a TrainConfig.

    peak = weights + trainable (LoRA) params + gradients + AdamW states
         + activations (per token of the micro-batch) + output-layer logits (chunked loss)
         + framework overhead

Activation bytes per token per decoder layer are a linear form in the layer's sizes. Its
coefficients were fitted (max error 1.5%, over 7 shapes x 2 depths x 2 batch shapes) to the bytes autograd actually saves for backward
in our trainer's forward (transformers' llama/qwen2/gemma3 with SDPA, SelectedLogitsLoss),
counted with torch.autograd.graph.saved_tensors_hooks; tests/unit/plan re-counts them.
On CPU the peak resident set is larger than the live bytes (glibc keeps freed blocks of the
backward pass), so CPU activations carry a measured allocator factor; see docs/planner.md.
"""

from __future__ import annotations

import dataclasses

from tunelab.plan.device import Device
from tunelab.plan.shape import ModelShape
from tunelab.train.config import TrainConfig

CHUNK = 256  # rows of logits alive at once in train/loss.py (its CHUNK; kept equal by a test)
ADAPTER_METHODS = ("lora", "dora", "qlora")  # = train.methods.ADAPTER_METHODS (which imports torch); a test keeps them equal

# floats saved per token per layer = h*H + i*I + q*q_dim + kv*kv_dim + nh*heads  (fitted, see above)
_ACT = {
    ("llama", "adapter"): dict(h=4.61, i=3.9, q=1.32, kv=3.71, nh=16.0, once=1.5),
    ("llama", "full"): dict(h=6.0, i=3.98, q=1.98, kv=2.33, nh=0.0, once=3.5),
    ("gemma3", "adapter"): dict(h=6.62, i=3.88, q=2.29, kv=5.04, nh=16.0, once=2.0),
    ("gemma3", "full"): dict(h=10.0, i=3.96, q=3.95, kv=4.66, nh=0.0, once=4.0),
}
# CPU peak RSS over live bytes, fitted to measured peaks (docs/planner.md): the saved activations
# of all layers (x1.18 with adapters; x0.68 for full fine-tuning, whose gradients reuse the freed
# blocks), plus ~3 layers' worth of backward temporaries that glibc keeps resident, ~4 logits chunks
CPU_SAVED_FACTOR = {"adapter": 1.18, "full": 0.68}
CPU_LAYER_TEMPS = 3.2
# bytes per saved float with an adapter, by base weight bytes: over a bf16 base peft keeps fp32
# copies of each adapted input (it casts x to the adapter's dtype) and of the norms' upcasts (3.5
# fits the bf16 lora peaks: qwen2 4x384 304-337 MiB, gemma3 2x256 177); over an fp32 base 4.4, not
# 4: qwen2 lora 4x384 re-measured 357-414 MiB on 2026-12-03 (11 runs) and 417 in CI, above the
# 346 it was fitted on, so an estimate of 4 B/float missed the band's high runs (CI, 417 MiB)
CPU_ADAPTER_FLOAT_BYTES = {2: 3.5, 4: 4.4}
CPU_LOGIT_BUFFERS = 3.8
CPU_OVERHEAD = 43 * 2**20  # torch/oneDNN buffers, tokenizer, accelerate: fitted at zero tokens
CUDA_OVERHEAD = 600 * 2**20  # CUDA context + cuBLAS workspace + allocator slack


@dataclasses.dataclass(frozen=True)
class Term:
    """One line of the breakdown."""

    name: str
    bytes: int
    note: str = ""
    phase: str = "always"  # "always", or held only in "backward" or in the optimizer "step"


@dataclasses.dataclass(frozen=True)
class TrainEstimate:
    """The breakdown of one training configuration on one device."""

    terms: tuple[Term, ...]
    device: Device
    trainable: int
    total_params: int

    @property
    def total(self) -> int:
        """The peak: what is always held plus the larger of the backward and the step phases.

        Gradients grow as the backward frees activations, so the two phases do not add up."""
        by_phase = {p: sum(t.bytes for t in self.terms if t.phase == p) for p in ("always", "backward", "step")}
        return by_phase["always"] + max(by_phase["backward"], by_phase["step"])

    @property
    def fits(self) -> bool:
        return self.total <= self.device.budget


def estimate_training(shape: ModelShape, cfg: TrainConfig, device: Device) -> TrainEstimate:
    """Every term of the training peak for `cfg` on `device`."""
    wb = weight_bytes(cfg, device)
    trainable, tb = trainable_params(shape, cfg), (4 if cfg.method in ADAPTER_METHODS else wb)
    tokens = cfg.micro_batch_size * cfg.data.cutoff_len
    terms = [
        Term("weights", base_weight_bytes(shape, cfg, wb), _weights_note(cfg, wb)),
        Term("trainable params", trainable * 4 if cfg.method in ADAPTER_METHODS else 0,
             f"{trainable / 1e6:.2f}M fp32 adapter" if cfg.method in ADAPTER_METHODS else "(are the weights)"),
        Term("optimizer (AdamW)", 2 * trainable * tb, "2 moments per trainable param"),
        Term("activations", activation_bytes(shape, cfg, device, wb),
             f"{tokens} tokens/micro-batch, checkpointing {'on' if cfg.gradient_checkpointing else 'off'}",
             "backward"),
        Term("logits (chunked loss)", logits_bytes(shape, cfg, device), f"{CHUNK} positions at a time", "backward"),
        Term("gradients", trainable * tb, f"{tb} B per trainable param", "step"),
        Term("optimizer step scratch", _step_scratch(shape, cfg, device, tb), "AdamW temporaries", "step"),
        Term("framework overhead", CUDA_OVERHEAD if device.kind == "cuda" else CPU_OVERHEAD, device.kind),
    ]
    return TrainEstimate(tuple(terms), device, trainable, shape.total_params())


def weight_bytes(cfg: TrainConfig, device: Device) -> int:
    """Bytes per base weight, in the dtype the trainer picks (TrainConfig.dtype_name)."""
    return {"bf16": 2, "fp16": 2, "fp32": 4}[cfg.dtype_name(device.kind)]


def base_weight_bytes(shape: ModelShape, cfg: TrainConfig, wb: int) -> int:
    """The base model's weights; qlora stores decoder linears in 4-bit NF4 (+ double-quant scales)."""
    if cfg.method != "qlora":
        return shape.total_params() * wb
    linear = shape.layers * sum(a * b for a, b in shape.linear_shapes().values())
    return int(linear * (0.5 + 1 / 64 + 4 / (64 * 256))) + (shape.total_params() - linear) * wb


def _weights_note(cfg: TrainConfig, wb: int) -> str:
    return "4-bit NF4 decoder linears" if cfg.method == "qlora" else {2: "bf16", 4: "fp32"}[wb]


def adapted_modules(shape: ModelShape, cfg: TrainConfig) -> dict[str, tuple[int, int]]:
    """The (in, out) of each linear the adapter targets in one layer."""
    linears = shape.linear_shapes()
    targets = cfg.lora.target_modules
    if targets == ["all-linear"]:
        return linears
    return {name: io for name, io in linears.items() if name in targets}


def trainable_params(shape: ModelShape, cfg: TrainConfig) -> int:
    """Parameters that get gradients and optimizer states."""
    if cfg.method in ADAPTER_METHODS:
        per_layer = sum(cfg.lora.rank * (a + b) + (b if cfg.method == "dora" else 0)
                        for a, b in adapted_modules(shape, cfg).values())
        return shape.layers * per_layer
    if cfg.method == "freeze":
        return min(cfg.freeze_trainable_layers, shape.layers) * shape.layer_params()
    return shape.total_params()


def _step_scratch(shape: ModelShape, cfg: TrainConfig, device: Device, tb: int) -> int:
    """AdamW's temporaries: CUDA runs the foreach kernels (one copy of all states),
    CPU steps tensor by tensor (two copies of the largest)."""
    if device.kind == "cuda":
        return trainable_params(shape, cfg) * tb
    largest = shape.vocab * shape.hidden if cfg.method == "full" else 0
    return 2 * largest * tb


def activation_floats_per_token(shape: ModelShape, cfg: TrainConfig) -> float:
    """Values autograd keeps per token in one decoder layer (without checkpointing)."""
    c = _ACT[(shape.family, "adapter" if cfg.method in ADAPTER_METHODS else "full")]
    return (c["h"] * shape.hidden + c["i"] * shape.intermediate + c["q"] * shape.q_dim
            + c["kv"] * shape.kv_dim + c["nh"] * shape.heads)


def activation_bytes(shape: ModelShape, cfg: TrainConfig, device: Device, wb: int) -> int:
    """Saved activations of one micro-batch plus the backward's temporaries (checkpointing keeps
    each layer's input and recomputes one layer at a time)."""
    tokens = cfg.micro_batch_size * cfg.data.cutoff_len
    kind = "adapter" if cfg.method in ADAPTER_METHODS else "full"
    per_layer = activation_floats_per_token(shape, cfg) * tokens
    saved = _ACT[(shape.family, kind)]["once"] * shape.hidden * tokens
    saved += shape.layers * shape.hidden * tokens + per_layer if cfg.gradient_checkpointing else shape.layers * per_layer
    if device.kind == "cpu":
        ab = CPU_ADAPTER_FLOAT_BYTES[wb] if kind == "adapter" else wb
        return int(ab * (saved * CPU_SAVED_FACTOR[kind] + per_layer * CPU_LAYER_TEMPS))
    return int(wb * (saved + per_layer))


def logits_bytes(shape: ModelShape, cfg: TrainConfig, device: Device) -> int:
    """The chunked loss: a few fp32 (chunk, vocab) buffers, plus, when the head trains, its fp32
    gradient from the loss and the embedding's dense gradient (tied heads add them up)."""
    rows = min(CHUNK, cfg.micro_batch_size * cfg.data.cutoff_len)
    buffers = CPU_LOGIT_BUFFERS if device.kind == "cpu" else 3
    head = 2 * shape.vocab * shape.hidden * 4 if cfg.method == "full" else 0
    return int(buffers * rows * shape.vocab * 4) + head
