"""`LLM`: offline batch generation, the public Python API of the engine (vLLM's, same names).

    llm = LLM("my-model", adapters={"sql": "runs/sql"})
    outs = llm.generate(["Hello"], SamplingParams(max_tokens=32, temperature=0))
    outs = llm.chat([[{"role": "user", "content": "Hi"}]], SamplingParams(), adapter="sql")

Code written for `from vllm import LLM, SamplingParams` runs unchanged: `sampling_params=`
(one or a list, one per prompt), `use_tqdm`, `lora_request=LoRARequest(name, id, path)` with
`LLM(..., enable_lora=True)`, `get_tokenizer()`, and vLLM's engine arguments (`max_model_len`,
`gpu_memory_utilization`, `tensor_parallel_size=1`, `trust_remote_code`, `dtype`, `seed`). Any other
keyword is an error naming it.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Any

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.engine import LLMEngine
from tunelab.engine.lora_request import LoRARequest
from tunelab.engine.outputs import CompletionOutput, RequestOutput
from tunelab.errors import ConfigError, InvalidRequest

__all__ = ["LLM", "RequestOutput", "CompletionOutput", "LoRARequest", "chat_template", "with_template_stops"]

Lora = LoRARequest | list[LoRARequest | None] | None


class LLM:
    """A model (store name, path or None for the default) ready to generate, with optional adapters."""

    def __init__(self, model: str | Path | None = None, adapters: dict[str, str | Path] | None = None,
                 dtype: str = "auto", device: str = "auto", *, enable_lora: bool = False, seed: int | None = None,
                 **engine_cfg: Any):
        from tunelab.config import build, config_keys

        if seed is not None:  # vLLM's LLM(seed=): requests without their own seed draw from this stream
            import torch

            torch.manual_seed(seed)

        unknown = [k for k in engine_cfg if k not in config_keys(EngineConfig)]
        if unknown:
            raise ConfigError(_unknown_kwarg(unknown[0], config_keys(EngineConfig)))
        cfg = build(EngineConfig, {**engine_cfg, "dtype": dtype, "device": device})
        self.engine = LLMEngine(model, adapters, cfg)
        self.tokenizer = self.engine.tokenizer
        self.enable_lora = enable_lora or bool(adapters)
        self._ids = itertools.count()
        self._requested: dict[str, str] = {}  # LoRARequest name -> the path it was loaded from
        self._templates: dict[tuple[str | None, Path | None], Any] = {}  # (adapter, its dir) -> ChatTemplate

    def get_tokenizer(self):
        """The model's Hugging Face tokenizer (as vLLM's `LLM.get_tokenizer`)."""
        return self.tokenizer

    def generate(self, prompts: str | dict | list[int] | list[str | list[int] | dict],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None, use_tqdm: bool = True,
                 lora_request: Lora = None, *, adapter: str | list[str | None] | None = None) -> list[RequestOutput]:
        """Complete each prompt (text or token ids); outputs come back in prompt order. A VLM's prompt dict
        may carry vLLM's `multi_modal_data={"image": image or [images]}` (PIL), one image per
        `<|vision_start|><|image_pad|><|vision_end|>` (Gemma 3: `<start_of_image>`) in the prompt."""
        items = [_unwrap(p) for p in _as_list(prompts)]
        images = [_images(p) for p in _as_list(prompts)]
        prompt_ids = [self._with_images(self._encode(self._image_starts(p, im)), im) for p, im in zip(items, images)]
        texts = [p if isinstance(p, str) else None for p in items]
        return self._run(prompt_ids, texts, sampling_params, self._adapters(lora_request, adapter), use_tqdm,
                         images)

    def chat(self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | None = None,
             use_tqdm: bool = True, lora_request: LoRARequest | None = None, *,
             chat_template_kwargs: dict | None = None, adapter: str | None = None,
             tools: list[dict] | None = None) -> list[RequestOutput]:
        """Reply to each conversation using the model's (or adapter's) chat template and its stop tokens.
        With `tools` (OpenAI's list) each output's `tool_calls` holds the calls parsed from its text.
        A VLM's turns may hold `image_url` (or Qwen's `image`) parts: data URLs or local paths."""
        from tunelab.data.templates import encode_prompt

        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        with_images = [self._image_turns(c) for c in convs]
        convs, images = [c for c, _ in with_images], [im for _, im in with_images]
        adapter = self._adapters(lora_request, adapter)
        template = self.template(adapter)
        kwargs = {**(chat_template_kwargs or {}), **({"tools": tools} if tools else {})}
        prompt_ids = [encode_prompt(template, self.tokenizer, c, **kwargs) for c in convs]
        texts = [template.render(c, add_generation_prompt=True, **kwargs) for c in convs]
        params = with_template_stops(sampling_params or SamplingParams(), template, self.tokenizer)
        outputs = self._run(prompt_ids, texts, params, adapter, use_tqdm, images)
        return with_tool_calls(outputs, template.tool_format) if tools else outputs

    def template(self, adapter: str | None = None):
        """The chat template saved with the adapter if it has one, else the model's: chosen once per
        adapter (again when its name is loaded from another directory), then reused by every call."""
        key = (adapter, self.engine.lora.adapters.get(adapter) if adapter else None)
        if key not in self._templates:
            self._templates[key] = chat_template(self.engine, adapter)
        return self._templates[key]

    def _adapters(self, lora_request: Lora, adapter):
        """Adapter name(s) for a call: `adapter=` names loaded ones; a LoRARequest loads on first use."""
        if lora_request is None:
            return adapter
        if adapter is not None:
            raise InvalidRequest("give lora_request or adapter, not both", param="lora_request")
        if not self.enable_lora:
            raise InvalidRequest("lora_request needs LLM(..., enable_lora=True)", param="lora_request")
        if isinstance(lora_request, list):
            return [self._load(r) for r in lora_request]
        return self._load(lora_request)

    def _load(self, request: LoRARequest | None) -> str | None:
        if request is None:
            return None
        if not isinstance(request, LoRARequest):
            raise InvalidRequest(f"lora_request must be a LoRARequest, got {type(request).__name__}",
                                 param="lora_request")
        if self._requested.get(request.name) != request.path or request.name not in self.engine.lora.names():
            self.engine.add_adapter(request.name, request.path)  # first use, or the name now has another path
            self._requested[request.name] = request.path
        return request.name

    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt))  # plain completion: tokenizer adds BOS if it uses one
        if not all(isinstance(t, int) for t in prompt):
            raise InvalidRequest("prompts must be strings or lists of token ids", param="prompts")
        return list(prompt)

    def _image_turns(self, conv: list[dict]) -> tuple[list[dict], list | None]:
        """A conversation with its image parts turned into the model's image tokens, and the images."""
        from tunelab.vision.images import load_rgb, resolve_image, split_image_parts
        from tunelab.vision.tokens import expand_markers, grid_for

        turns, refs = [], []
        for i, turn in enumerate(conv):
            content, found = split_image_parts(turn.get("content"), f"messages[{i}].content", "<chat>", 0)
            if found:
                turn = {**turn, "content": "".join(part.get("text", "") for part in content)}
                refs += [resolve_image(ref, "<chat>", 0, where) for ref, where in found]
            turns.append(turn)
        if not refs:
            return conv, None
        if not hasattr(self.engine.model, "encode_images"):
            raise InvalidRequest("this model serves text only: it takes no images", param="messages")
        return expand_markers(turns, refs, grid_for(self.tokenizer)), [load_rgb(ref) for ref in refs]

    def _image_starts(self, prompt, images: list | None):
        """A text prompt with Gemma 3's bare `<start_of_image>` grown into whole image runs, as its processor does."""
        from tunelab.vision.preprocess import vision_grid
        from tunelab.vision.tokens import expand_image_starts

        if not images or not isinstance(prompt, str):
            return prompt
        return expand_image_starts(prompt, vision_grid(self.engine.model_dir))

    def _with_images(self, ids: list[int], images: list | None) -> list[int]:
        """`ids` with each image's pad token (`<|image_pad|>`, `<image_soft_token>`) repeated once per token
        the image takes."""
        from tunelab.vision.preprocess import image_tokens, vision_grid
        from tunelab.vision.tokens import expand_image_pads, image_token_id

        if not images:
            return ids
        pad = image_token_id(self.tokenizer)
        if pad is None or not hasattr(self.engine.model, "encode_images"):
            raise InvalidRequest("this model serves text only: it takes no images", param="multi_modal_data")
        grid = vision_grid(self.engine.model_dir)
        try:
            return expand_image_pads(ids, pad, [image_tokens(im.height, im.width, grid) for im in images],
                                     grid.format)
        except ValueError as err:
            raise InvalidRequest(str(err), param="multi_modal_data") from None

    def _run(self, prompt_ids: list[list[int]], texts: list[str | None], params, adapter,
             use_tqdm: bool, images: list | None = None) -> list[RequestOutput]:
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompt_ids)
        adapters = adapter if isinstance(adapter, list) else [adapter] * len(prompt_ids)
        if len(params_list) != len(prompt_ids) or len(adapters) != len(prompt_ids):
            raise InvalidRequest("sampling_params and lora_request lists must have one entry per prompt",
                                 param="sampling_params")
        for ids, p in zip(prompt_ids, params_list):  # every prompt is checked before any work starts
            self.engine.check_prompt(ids, p)
        requests = []
        for ids, p, a, im in zip(prompt_ids, params_list, adapters, images or [None] * len(prompt_ids)):
            rid = f"llm-{next(self._ids)}"
            requests.append((rid, ids, self.engine.add_request(rid, ids, p, a, images=im)))
        self._step_all([seqs for _, _, seqs in requests], use_tqdm)
        return [RequestOutput.from_sequences(rid, ids, seqs, text) for (rid, ids, seqs), text in zip(requests, texts)]

    def _step_all(self, requests: list[list], use_tqdm: bool) -> None:
        """Step the engine until every request is done, ticking a progress bar per finished prompt."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), desc="Processed prompts", unit="prompt", disable=not use_tqdm)
        done = 0
        with bar:
            while self.engine.has_unfinished():
                self.engine.step()
                now = sum(all(s.is_finished for s in seqs) for seqs in requests)
                bar.update(now - done)
                done = now
            bar.update(len(requests) - done)


def _unknown_kwarg(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid + ["enable_lora", "adapters"], n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "; engine arguments: " + ", ".join(
        k for k in valid if "." not in k)
    return f"LLM() got an unknown argument '{name}'{hint}"


def chat_template(engine: LLMEngine, adapter: str | None = None):
    """The ChatTemplate for `engine`'s adapter `adapter` (None: the base model), by `resolve_template`."""
    from tunelab.data.templates import resolve_template

    return resolve_template(engine.model_dir, engine.lora.adapters.get(adapter) if adapter else None)


def with_tool_calls(outputs: list[RequestOutput], fmt_name: str | None) -> list[RequestOutput]:
    """Fill each completion's `tool_calls` by the template format's parser."""
    from tunelab.tools import get_format, parse_tool_calls

    for out in outputs:
        for completion in out.outputs:
            completion.tool_calls = parse_tool_calls(get_format(fmt_name), completion.text)[1] if fmt_name else []
    return outputs


def with_template_stops(params: SamplingParams, template, tokenizer) -> SamplingParams:
    """A copy of `params` that also stops at the template's end-of-turn token ids (as the server
    does: not with ignore_eos)."""
    return params.stopping_at(template.stop_token_ids(tokenizer))


def _unwrap(prompt: Any) -> str | list[int]:
    """vLLM's prompt dicts ({"prompt": text} or {"prompt_token_ids": ids}, and multi_modal_data) -> text or ids."""
    if not isinstance(prompt, dict):
        return prompt
    extra = set(prompt) - {"prompt", "prompt_token_ids", "multi_modal_data"}
    if extra or len(set(prompt) - {"multi_modal_data"}) != 1:
        raise InvalidRequest(f"a prompt dict takes 'prompt' or 'prompt_token_ids', got {sorted(prompt)}",
                             param="prompts")
    return prompt.get("prompt", prompt.get("prompt_token_ids"))


def _images(prompt: Any) -> list | None:
    """The PIL images of a prompt dict's `multi_modal_data` (vLLM's {"image": image or [images]})."""
    data = prompt.get("multi_modal_data") if isinstance(prompt, dict) else None
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"image"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InvalidRequest(f"multi_modal_data takes 'image' only, got {got}", param="multi_modal_data")
    images = data.get("image")
    images = images if isinstance(images, (list, tuple)) else [images]
    if not all(hasattr(im, "convert") and hasattr(im, "height") for im in images):
        raise InvalidRequest("multi_modal_data['image'] must be a PIL image or a list of them",
                             param="multi_modal_data")
    return list(images)


def _as_list(prompts) -> list:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if prompts and isinstance(prompts[0], int):
        return [prompts]
    return list(prompts)
