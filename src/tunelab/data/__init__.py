"""Training data: readers for every common format, the shared chat template, loss masks.

Nothing here imports torch or transformers; tokenizers are passed in by the caller.
"""

from tunelab.data.config import DataConfig
from tunelab.data.errors import DataError, TemplateError
from tunelab.data.formats import LoadedData, Row, read_datasets
from tunelab.data.templates import ChatTemplate, encode_prompt
from tunelab.data.tokenize import Example, TokenStats, build_examples, tokenize_row

__all__ = [
    "ChatTemplate", "DataConfig", "DataError", "Example", "LoadedData", "Row", "TemplateError",
    "TokenStats", "build_examples", "encode_prompt", "read_datasets", "tokenize_row",
]
