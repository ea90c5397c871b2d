"""The one interface every serving backend implements, and the types that cross it.

The HTTP layer validates a request, turns it into prompt ids and the engine's
`SamplingParams` (the one sampling type of every backend), and iterates
`Backend.generate`; the backend owns the model on its own thread. Each backend
states what it supports in `Capabilities`, so a request asking for more (logprobs,
adapters) gets a clear 400 instead of being silently ignored.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, AsyncIterator

from tunelab.engine.config import SamplingParams
from tunelab.engine.sequence import TokenLogprob


@dataclasses.dataclass
class Capabilities:
    """What a backend can do; the routes check requests against it."""

    adapters: bool = False  # serves LoRA adapters by name (/v1/adapters, model=NAME)
    logprobs: bool = False  # can return token logprobs
    structured_outputs: bool = False  # enforces SamplingParams.structured_outputs (JSON schema, forced tool calls)
    embeddings: bool = False  # can embed prompts (pooled final hidden states)
    note: str = ""  # one line saying what this backend is good at and what it lacks


@dataclasses.dataclass
class Delta:
    """New output of one sequence since the last delta."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # stop | length | abort, on the last delta only
    stop_string: str | None = None  # the stop string that ended it, when one did (last delta)


@dataclasses.dataclass
class Prompt:
    """Prompt ids plus the rendered text (used to see whether the template opened <think>), and the
    images (PIL) a vision-language model's image tokens stand for, in order."""

    ids: list[int]
    text: str = ""
    images: list = dataclasses.field(default_factory=list)


class Backend(abc.ABC):
    """A loaded model that generates text for many concurrent requests."""

    name: str = "base"
    capabilities = Capabilities()
    model_id: str = ""  # the name clients put in `model`
    model_path: str = ""
    context_length: int = 0
    created: int = 0

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights and tokenizer (blocking; called off the event loop)."""

    @abc.abstractmethod
    def encode_chat(self, messages: list[dict], template_kwargs: dict[str, Any],
                    adapter: str | None = None) -> Prompt:
        """Messages -> prompt ids through the chat template of `adapter` (None: the base model)."""

    @abc.abstractmethod
    def encode_text(self, text: str) -> Prompt:
        """Raw text -> prompt ids (BOS added the way the model expects)."""

    def chat_template(self, adapter: str | None = None) -> Any:
        """The ChatTemplate `adapter`'s requests render with (its `tool_format` parses replies)."""
        return getattr(self, "template", None)

    def takes_images(self) -> bool:
        """Whether the loaded model is a vision-language model this backend gives images to."""
        return False

    @abc.abstractmethod
    def generate(self, request_id: str, prompt: list[int], params: SamplingParams,
                 adapter: str | None = None, images: list | None = None) -> AsyncIterator[Delta]:
        """Stream deltas of one sequence (params.n is 1); the last one carries finish_reason. Only a
        backend whose `takes_images()` is true is given `images`."""

    @abc.abstractmethod
    def abort(self, request_id: str) -> None:
        """Stop a request and free what it holds (client gone, shutdown)."""

    async def embed(self, prompts: list[list[int]], adapter: str | None = None) -> Any:
        """Pooled embeddings of token-id prompts, a float32 numpy array (B, D), by the model's pooling."""
        raise NotImplementedError(f"the {self.name} backend cannot embed")

    def add_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter under `name` without restarting."""
        raise NotImplementedError(f"the {self.name} backend cannot load adapters")

    def remove_adapter(self, name: str) -> None:
        """Unload adapter `name`."""
        raise NotImplementedError(f"the {self.name} backend cannot load adapters")

    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> path."""
        return {}

    def stats(self) -> dict[str, float]:
        """running, waiting, kv_usage (0..1), kv_blocks_used, preemptions."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Facts for /api/show and /v1/models: family, parameter_size, quantization, template, pooling."""
        return {}

    def close(self) -> None:
        """Release the model; in-flight requests are aborted."""


class HFTokenizerPrompts:
    """encode_chat/encode_text for backends holding a Hugging Face `tokenizer` (engine, vLLM):
    prompts are encoded exactly as training encodes them, each adapter with its own template."""

    tokenizer: Any
    template: Any  # the base model's ChatTemplate
    config: Any  # ServeConfig: chat_template is the override

    def load_templates(self, model_dir: str | Path) -> None:
        """Resolve the base model's template; adapters add theirs in `remember_template`."""
        from tunelab.data.templates import resolve_template

        self.model_dir = Path(model_dir)
        self.template = resolve_template(self.model_dir, None, self.config.chat_template)
        self._templates = {None: (self.template, self.template.stop_token_ids(self.tokenizer))}

    def remember_template(self, adapter: str, path: str | Path | None) -> None:
        """Resolve adapter `adapter`'s template (its saved one first); None path forgets it."""
        from tunelab.data.templates import resolve_template

        if path is None:
            self._templates.pop(adapter, None)
            return
        template = resolve_template(self.model_dir, path, self.config.chat_template)
        self._templates[adapter] = (template, template.stop_token_ids(self.tokenizer))

    def chat_template(self, adapter: str | None = None) -> Any:
        """The ChatTemplate requests for `adapter` (None: the base model) are rendered with."""
        return self._templates.get(adapter, self._templates[None])[0]

    def stop_ids(self, adapter: str | None = None) -> list[int]:
        """The end-of-turn and EOS ids of `adapter`'s template."""
        return self._templates.get(adapter, self._templates[None])[1]

    def encode_chat(self, messages: list[dict], template_kwargs: dict[str, Any],
                    adapter: str | None = None, images: list[str] | None = None) -> Prompt:
        """`adapter`'s chat template renders; it writes BOS itself, so none is added. `images` (checked
        data URLs, vision/images.py) stand at the messages' `<image>` markers (a VLM only)."""
        from tunelab.data.templates import encode_text

        if images:
            from tunelab.vision.images import load_rgb
            from tunelab.vision.tokens import expand_markers, grid_for

            messages = expand_markers(messages, images, grid_for(self.tokenizer))
        text = self.chat_template(adapter).render(messages, add_generation_prompt=True, **template_kwargs)
        return Prompt(encode_text(self.tokenizer, text), text, [load_rgb(ref) for ref in images or ()])

    def encode_text(self, text: str) -> Prompt:
        """Raw completion prompt: the tokenizer adds BOS the way the model expects."""
        return Prompt(list(self.tokenizer.encode(text)), text)
