"""User-facing errors: the CLI prints their message on one line, never a traceback."""


class TunelabError(Exception):
    """Base for errors caused by user input or environment, shown without a traceback."""


class ConfigError(TunelabError):
    """A config key or value is wrong; the message names the key."""


class ModelNotFound(TunelabError):
    """A model name resolves to nothing in the store, on disk, or on a hub."""


class MissingExtra(TunelabError):
    """An optional dependency is needed but not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'tunelab[{extra}]'"
        )


class InvalidRequest(TunelabError):
    """A request parameter is out of range; `param` names it (the server answers HTTP 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class CorruptModelFile(TunelabError):
    """A GGUF, safetensors or config file is truncated or malformed; the message names it."""


class DiskFull(TunelabError):
    """The disk filled up while writing; nothing half-written was kept."""


class HubUnreachable(TunelabError):
    """A model hub could not be reached (offline, no network, or a timeout)."""


class RunError(TunelabError):
    """A run directory is missing, unfinished or corrupt, or its adapter does not fit its base model."""


class RewardFunctionError(TunelabError):
    """A GRPO reward function cannot be imported, raises, or returns the wrong rewards; names it."""


class RewardModelError(TunelabError):
    """A reward model (stage=rm: a scalar score head, no LM head) was asked to generate."""

    def __init__(self, where: str, action: str):
        super().__init__(f"{where} is a reward model (stage=rm: a scalar score head, no LM head); it scores "
                         f"text but cannot generate, so it cannot be {action}. `tunelab eval` reports its held-out "
                         "pairwise accuracy; `tunelab merge` writes it as a Hugging Face sequence-classification model")
