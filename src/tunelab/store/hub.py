"""Downloads from the Hugging Face Hub and ModelScope: weights, config and tokenizer only.

Files land in `$TUNELAB_HOME/downloads/NAME` first. huggingface_hub keeps partial files
there, so an interrupted pull resumes where it stopped; once complete, the files move into
the pull's temp dir and from there into the store in one rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunelab.errors import HubUnreachable, MissingExtra, ModelNotFound
from tunelab.store.index import Store, safe_dir_name

# Just what a model needs: no .bin/.pth duplicates, no ONNX, no images.
ALLOW_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "chat_template.jinja", "chat_template.json", "tunelab_template.json",
]
TIMEOUT_S = "10"  # seconds per request: an unreachable hub must fail fast, not hang


def download_dir(store: Store, name: str) -> Path:
    """Where partial downloads of `name` wait (and resume)."""
    return store.home / "downloads" / safe_dir_name(name)


def fetch_hf(repo_id: str, dest: Path, store: Store, revision: str | None = None) -> None:
    """Download `repo_id` from the Hugging Face Hub and move its files into `dest`."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", TIMEOUT_S)
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", TIMEOUT_S)
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    staging = download_dir(store, "hf--" + repo_id)
    try:
        snapshot_download(repo_id, revision=revision, local_dir=staging, allow_patterns=ALLOW_PATTERNS,
                          etag_timeout=float(TIMEOUT_S))
    except hf_errors.GatedRepoError:
        raise ModelNotFound(f"'{repo_id}' is gated on the Hugging Face Hub: accept its license "
                            "on the website and log in with `hf auth login`") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFound(f"no model '{repo_id}' on the Hugging Face Hub "
                            "(or it is private: log in with `hf auth login`). See `tunelab list`.") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFound(f"'{repo_id}' has no revision '{revision}' on the Hugging Face Hub") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, ConnectionError) as err:
        raise _unreachable("the Hugging Face Hub", repo_id, err) from None
    except hf_errors.HfHubHTTPError as err:
        raise HubUnreachable(f"Hugging Face Hub error for '{repo_id}': {_first_line(err)}") from None
    except Exception as err:  # httpx/requests transport errors differ between hub versions
        if _is_network_error(err):
            raise _unreachable("the Hugging Face Hub", repo_id, err) from None
        raise
    _move_files(staging, dest)


def fetch_modelscope(model_id: str, dest: Path, store: Store) -> None:
    """Download `model_id` from ModelScope (needs the optional `modelscope` package)."""
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise MissingExtra("modelscope", "modelscope", "pulling from ModelScope") from None
    staging = download_dir(store, "ms--" + model_id)
    try:
        snapshot_download(model_id, local_dir=str(staging), allow_patterns=ALLOW_PATTERNS)
    except Exception as err:
        if _is_network_error(err):
            raise _unreachable("ModelScope", model_id, err) from None
        raise ModelNotFound(f"cannot fetch '{model_id}' from ModelScope: {_first_line(err)}") from None
    _move_files(staging, dest)


def _move_files(staging: Path, dest: Path) -> None:
    """Move downloaded files (not the hub's own bookkeeping) into `dest`, then drop `staging`."""
    for path in sorted(staging.rglob("*")):
        rel = path.relative_to(staging)
        if path.is_file() and not rel.parts[0].startswith("."):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest / rel)
    shutil.rmtree(staging, ignore_errors=True)


def _unreachable(hub: str, ref: str, err: BaseException) -> HubUnreachable:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline else _first_line(err)
    return HubUnreachable(f"cannot reach {hub} to fetch '{ref}': {why}. "
                          "Check the network, or pull a local directory or .gguf file instead.")


def _is_network_error(err: BaseException) -> bool:
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException",
                         "NetworkError", "ConnectionError", "Timeout", "TransportError"})


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
