"""One dtype rule for training and the engine: names, and what "auto" means where."""

from __future__ import annotations

import pytest
import torch

from tunelab.dtypes import auto_dtype_name, cpu_has_fast_bf16, resolve_dtype
from tunelab.errors import TunelabError


def test_every_spelling_resolves_on_any_device():
    for names, dtype in ((("bf16", "bfloat16"), torch.bfloat16), (("fp16", "float16", "half"), torch.float16),
                         (("fp32", "float32", "float"), torch.float32)):
        for name in names:
            assert resolve_dtype(name, "cpu") is dtype
            assert resolve_dtype(name, "cpu", training=True) is dtype
    assert resolve_dtype(torch.float16, "cpu") is torch.float16


def test_unknown_name_names_the_setting_and_the_choices():
    with pytest.raises(TunelabError, match="dtype: 'int3' is not one of auto, bf16, fp16, fp32"):
        resolve_dtype("int3", "cpu")


def test_auto_on_cpu_is_bf16_on_a_bf16_cpu_for_inference_and_adapter_training_only():
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) is expected
    assert resolve_dtype("auto", "cpu", training=True, frozen_base=True) is expected
    # full/freeze would update bf16 weights in place: those stay fp32 on CPU
    assert resolve_dtype("auto", "cpu", training=True) is torch.float32


def test_train_config_pins_which_methods_train_over_a_bf16_base_on_cpu():
    from tunelab.train.config import TrainConfig

    bf16 = "bf16" if cpu_has_fast_bf16() else "fp32"
    for method, stage, expected in (("lora", "sft", bf16), ("dora", "dpo", bf16), ("lora", "rm", "fp32"),
                                    ("full", "sft", "fp32"), ("freeze", "sft", "fp32")):
        assert TrainConfig(method=method, stage=stage).dtype_name("cpu") == expected, (method, stage)
    assert TrainConfig(precision="fp32").dtype_name("cpu") == "fp32"
    assert TrainConfig(method="full", precision="bf16").dtype_name("cpu") == "bf16"


def test_auto_on_cuda_is_bf16_when_the_gpu_has_it_for_both_paths():
    has = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    assert auto_dtype_name("cuda") == auto_dtype_name("cuda", training=True) == ("bf16" if has else "fp32")

