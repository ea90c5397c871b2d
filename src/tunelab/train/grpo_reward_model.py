"""A trained reward model (stage=rm) as a GRPO reward function.

    grpo.reward_funcs: [format, runs/my-rm]      # a reward-model run, or its merged directory

As TRL's GRPOTrainer takes a reward model's path among its reward_funcs. Each completion is
rendered after its prompt with the chat template the reward model was trained with, tokenized by
its own tokenizer (as its pairs were: data/tokenize.tokenize_preference), and scored by its head
at the last token on tunelab's engine in scoring mode (engine.pooling.score_pooling: each row one
unpadded prefill, rows batched up to the step token budget). A LoRA run is merged into a temporary
directory first (export/merge.merge_run), which the engine loads. A family the engine has no code
for is scored by transformers' forward instead (train/reward.reward_scores, padded batches). The
entry is checked when the reward functions load (before the policy loads); the weights load once,
at the first step. A completion that cannot be rendered stably is unscorable (None, as in TRL).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import RewardFunctionError

BATCH = 16  # rows per transformers forward (the fallback); the engine batches by its token budget
ENGINE_TOKENS = 8192  # the scoring engine's step token budget and KV cache size


def names_reward_model(spec: str) -> bool:
    """A reward_funcs entry that names a directory or a run (not a built-in or 'module:function')."""
    from tunelab.rundir import find_run

    return ":" not in spec and ("/" in spec or Path(spec).expanduser().is_dir() or find_run(spec) is not None)


@dataclasses.dataclass
class _Source:
    """Where a reward model's weights, tokenizer, template and data settings come from."""

    run: Any  # a stage=rm run (rundir.Run), or None for a merged directory
    weights: Path  # the merged directory; for a run, its model/ or base (for the tokenizer check)
    tokenizer: Path
    template: Any
    data: Any  # the run's DataConfig (system prompt), or the defaults for a merged directory


class RewardModelScorer:
    """Callable as a reward function: f(prompts, completions) -> one score per completion."""

    def __init__(self, spec: str):
        self.spec = spec
        self.source = _locate(spec)
        self.__name__ = Path(spec.rstrip("/")).name  # its label in metrics: rewards/<name>/mean
        self._loaded: tuple[Any, Any] | None = None

    def __call__(self, prompts: list, completions: list[str]) -> list[float | None]:
        scorer, tokenizer = self.load()
        pairs = [self.tokenize(p, c, tokenizer) for p, c in zip(prompts, completions)]
        kept = [i for i, pair in enumerate(pairs) if pair is not None]
        scores: list[float | None] = [None] * len(pairs)
        for i, score in zip(kept, scorer([pairs[i] for i in kept])):
            scores[i] = score
        return scores

    def tokenize(self, prompt: list[dict], completion: str, tokenizer: Any):
        """(prompt ids, completion ids) of one completion as the reward model's pairs were tokenized."""
        from tunelab.data.rows import Row
        from tunelab.data.tokenize import tokenize_preference

        row = Row([*prompt, {"role": "assistant", "content": completion}], None, self.spec, 0, "grpo")
        example, _ = tokenize_preference(row, self.source.template, tokenizer, self.source.data)
        return None if example is None else (example.prompt_ids, example.completions[0])

    def load(self) -> tuple[Any, Any]:
        """(scorer: pairs of (prompt ids, completion ids) -> scores, tokenizer), loaded on the first call only."""
        if self._loaded is None:
            from transformers import AutoTokenizer

            self._loaded = _load(self.source), AutoTokenizer.from_pretrained(str(self.source.tokenizer))
        return self._loaded


class EngineScorer:
    """Scores on tunelab's engine in scoring mode (`engine`: an LLMEngine with score=True)."""

    def __init__(self, model_dir: Path, tokens: int = ENGINE_TOKENS):
        from tunelab.config import build
        from tunelab.engine.config import EngineConfig
        from tunelab.engine.engine import LLMEngine

        dtype = "bf16" if torch.cuda.is_available() else "fp32"
        cfg = build(EngineConfig, {"dtype": dtype, "block_size": 16, "num_blocks": -(-tokens // 16),
                                   "max_num_batched_tokens": tokens, "enforce_eager": True})
        self.engine, self.tokens = LLMEngine(model_dir, None, cfg, score=True), tokens

    def __call__(self, pairs: list) -> list[float]:
        longest = max((len(p) + len(c) for p, c in pairs), default=0)
        if longest > self.tokens:  # the KV cache holds this many tokens: a longer row could never run
            raise RewardFunctionError(f"a prompt + completion of {longest} tokens is longer than the reward "
                                      f"model's scoring budget of {self.tokens} tokens (grpo_reward_model.ENGINE_TOKENS)")
        return [float(v[0]) for v in self.engine.embed([p + c for p, c in pairs])]


class TransformersScorer:
    """Scores by transformers' forward, in padded batches: for a family the engine has no code for."""

    def __init__(self, model: torch.nn.Module, pad_id: int):
        self.model, self.pad_id = model, pad_id

    @torch.no_grad()
    def __call__(self, pairs: list) -> list[float]:
        from tunelab.train.pairs import _rows
        from tunelab.train.reward import reward_scores

        device, out = next(self.model.parameters()).device, []
        for start in range(0, len(pairs), BATCH):
            rows = pairs[start : start + BATCH]
            batch = {k: t.to(device) for k, t in _rows([p for p, _ in rows], [c for _, c in rows], self.pad_id).items()}
            out += reward_scores(self.model, batch["input_ids"], batch["labels"], batch["position_ids"]).tolist()
        return out


def _locate(spec: str) -> _Source:
    """The run or merged directory `spec` names, checked: a finished reward model with a tokenizer that fits."""
    from tunelab.rundir import find_run

    run = find_run(spec)
    if run is not None:
        return _run_source(run, spec)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}' is not a run or a directory (a reward model is "
                                  "named by its stage=rm run, e.g. runs/my-rm, or its merged directory)")
    return _merged_source(path, spec)


def _run_source(run: Any, spec: str) -> _Source:
    from tunelab.rundir import load_finished

    if not run.is_reward_model:
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}' is a stage={run.stage} run, not a reward model "
                                  "(train one with stage=rm)")
    try:
        load_finished(run.path)  # finished, base present, adapter fits
    except Exception as err:  # noqa: BLE001 - RunError or the adapter check's error, named with the entry
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}': {err}") from None
    weights = run.model_dir or run.base_model
    tokenizer = next((d for d in (run.adapter_dir, run.model_dir) if d is not None and _has_tokenizer(d)), weights)
    data = dataclasses.replace(run.train_config().data, cutoff_len=1 << 30)  # score every completion whole
    source = _Source(run, weights, tokenizer, run.chat_template(), data)
    _check_tokenizer(source, spec)
    return source


def _merged_source(path: Path, spec: str) -> _Source:
    from tunelab.data.config import DataConfig
    from tunelab.data.templates import resolve_template
    from tunelab.models.registry import is_reward_model

    config = path / "config.json"
    archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or [] if config.is_file() else []
    if not is_reward_model(archs):
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}' is not a reward model: {config} names "
                                  f"{archs or 'no architecture'}, not a *ForSequenceClassification")
    source = _Source(None, path, path, resolve_template(path, None), DataConfig(cutoff_len=1 << 30))
    _check_tokenizer(source, spec)
    return source


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _check_tokenizer(source: _Source, spec: str) -> None:
    """The reward model's tokenizer loads and its ids fit the model's embeddings."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.tokenizer))
    except Exception as err:  # noqa: BLE001 - any loading error, named with the entry
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}': cannot load its tokenizer from "
                                  f"{source.tokenizer}: {type(err).__name__}: {err}") from None
    vocab = json.loads((source.weights / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    if vocab is not None and len(tokenizer) > int(vocab):
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}': its tokenizer ({source.tokenizer}) has "
                                  f"{len(tokenizer)} tokens but the model's vocab_size is {vocab}: wrong tokenizer")


def _load(source: _Source) -> Any:
    """The scorer: the engine on the merged reward model, or transformers where the engine has no family."""
    import tempfile

    from tunelab.export.merge import merge_run

    problem = _engine_problem(source.weights)
    if problem is not None:
        import warnings

        warnings.warn(f"grpo reward model {source.weights}: {problem}; scoring with transformers", stacklevel=2)
        return _transformers_scorer(source)
    if source.run is None:
        return EngineScorer(source.weights)
    with tempfile.TemporaryDirectory(prefix="tunelab-rm-") as tmp:  # the engine keeps no file open
        return EngineScorer(merge_run(source.run, Path(tmp) / "merged", log=lambda _: None))


def _engine_problem(weights: Path) -> str | None:
    """Why the engine cannot run the reward model's family (UnsupportedModel's message), or None."""
    from tunelab.models.loader import load_config
    from tunelab.models.registry import UnsupportedModel, family_for

    try:
        family_for(load_config(weights), str(weights / "config.json"), score=True)
    except UnsupportedModel as err:
        return str(err)
    return None


def _transformers_scorer(source: _Source) -> TransformersScorer:
    """The reward model (a LoRA run's adapter and head folded in), in eval mode, on transformers."""
    from transformers import AutoTokenizer

    from tunelab.train.reward import load_reward_model, load_run_reward_model

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    if source.run is None:
        model = load_reward_model(source.weights, dtype=dtype)
    else:
        model = load_run_reward_model(source.run, dtype)
        model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    pad_id = AutoTokenizer.from_pretrained(str(source.tokenizer)).pad_token_id or 0
    return TransformersScorer(model.to("cuda" if cuda else "cpu").eval(), pad_id)
