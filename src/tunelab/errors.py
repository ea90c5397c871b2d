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
