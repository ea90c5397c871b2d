"""Known noise from the libraries under us, silenced exactly where it is raised and nowhere else.

peft's `PeftModel.__init__` reads `model.is_gradient_checkpointing`, which transformers (v5)
deprecated in favour of `is_activation_checkpointing` with a FutureWarning that the user can do
nothing about. Every place tunelab wraps a model with peft does it inside `quiet_peft_warnings()`;
any other warning still shows.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_peft_warnings() -> Iterator[None]:
    """Hide transformers' `is_gradient_checkpointing` FutureWarning while peft wraps a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield
