"""Known noise from the libraries under us, silenced exactly where it is raised and nowhere else.

peft's `PeftModel.__init__` reads `model.is_gradient_checkpointing`, which transformers (v5)
deprecated in favour of `is_activation_checkpointing` with a FutureWarning that the user can do
nothing about. Every place tunelab wraps a model with peft does it inside `quiet_peft_warnings()`;
any other warning still shows.

bitsandbytes' CPU backend logs at import (peft imports it whenever it is installed) that the optional
`kernels` package is missing; that package only serves its AVX512-BF16 inference repack, which tunelab
turns off (`methods._keep_nf4_layout`). `quiet_bitsandbytes()` raises that one logger to ERROR for the
process, from `import tunelab`: it names the logger only, so nothing is imported.
"""

from __future__ import annotations

import logging
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


def quiet_bitsandbytes() -> None:
    """Hide the CPU backend's missing-`kernels` warning, which every `import peft` would print."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
