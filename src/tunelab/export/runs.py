"""Locate a training run and check it is safe to merge or export.

A run directory (docs/architecture.md) holds `status.json`, and either a PEFT
`adapter/` or, for full and freeze fine-tunes, a whole model under `model/`.
Every check here reads only JSON and safetensors headers, so a bad run fails
in milliseconds, before any weights are loaded or any file is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.atomic import read_json_object
from tunelab.export.errors import RunError

if TYPE_CHECKING:
    from tunelab.data.templates import ChatTemplate

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclasses.dataclass
class Run:
    """A finished run: where its base model, adapter or full model live."""

    dir: Path
    status: dict
    base_model: Path
    method: str
    adapter_dir: Path | None = None
    model_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def is_qlora(self) -> bool:
        """QLoRA trains against a 4-bit base; merging must use a dequantized 16-bit one."""
        return self.method.lower() == "qlora"

    def chat_template(self) -> ChatTemplate:
        """The ChatTemplate training used (saved with the adapter or model), by `resolve_template`."""
        from tunelab.data.templates import resolve_template

        return resolve_template(self.model_dir or self.base_model, self.adapter_dir)


def find_run_dir(spec: str | Path) -> Path | None:
    """A run path, or a run name under ./runs or $TUNELAB_HOME/runs; None if not a run."""
    from tunelab.store import tunelab_home

    path = Path(spec).expanduser()
    candidates = [path, Path("runs") / str(spec), tunelab_home() / "runs" / str(spec)]
    for cand in candidates:
        if (cand / "status.json").is_file():
            return cand.resolve()
    return None


def require_run_dir(spec: str | Path) -> Path:
    """Like `find_run_dir`, but a missing run is a RunError saying where it looked."""
    run_dir = find_run_dir(spec)
    if run_dir is None:
        raise RunError(f"no run at '{spec}' (looked for status.json there, in ./runs and in $TUNELAB_HOME/runs)")
    return run_dir


def load_run(spec: str | Path) -> Run:
    """Open the run `spec` and validate it: finished, adapter present, adapter fits base."""
    run_dir = require_run_dir(spec)
    status = read_json_object(run_dir / "status.json", RunError)
    _check_not_training(run_dir, status)
    run = Run(dir=run_dir, status=status, base_model=_base_model(run_dir, status),
              method=str(status.get("method", "lora")))
    if (run_dir / "model" / "config.json").is_file():
        run.model_dir = run_dir / "model"
        return run
    run.adapter_dir = _check_adapter(run_dir / "adapter")
    check_adapter_fits_base(run.adapter_dir, run.base_model)
    return run


def _check_not_training(run_dir: Path, status: dict) -> None:
    state = status.get("state")
    if state == "running" and _pid_alive(status.get("pid")):
        step, total = status.get("step", "?"), status.get("total_steps", "?")
        raise RunError(f"run '{run_dir.name}' is still training (step {step}/{total}); "
                       "wait for it to finish or stop it first")
    if state in ("failed",) or state is None:
        raise RunError(f"{run_dir / 'status.json'}: run state is '{state}', not finished")


def _pid_alive(pid: object) -> bool:
    # A 'running' status whose process is gone means the trainer was killed; treat as stopped.
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _base_model(run_dir: Path, status: dict) -> Path:
    base = status.get("base_model")
    if not base:
        raise RunError(f"{run_dir / 'status.json'}: field 'base_model' is missing")
    path = Path(str(base))
    if not (path / "config.json").is_file():
        raise RunError(f"{run_dir / 'status.json'}: base_model '{base}' is not a model directory "
                       "(no config.json); was it deleted from the store?")
    return path


def _check_adapter(adapter_dir: Path) -> Path:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RunError(f"missing adapter file: {adapter_dir / 'adapter_config.json'}")
    if not any((adapter_dir / w).is_file() for w in ADAPTER_WEIGHTS):
        raise RunError(f"missing adapter file: {adapter_dir / ADAPTER_WEIGHTS[0]}")
    return adapter_dir


def check_adapter_fits_base(adapter_dir: Path, base_dir: Path) -> None:
    """Raise RunError unless every LoRA matrix matches the shape of its base weight."""
    base_shapes = safetensors_shapes(base_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS[0]
    if not weights.is_file():
        return  # a legacy .bin adapter: PEFT itself checks shapes on load
    for name, shape in safetensors_shapes(weights).items():
        module, kind = _lora_module(name)
        if module is None:
            continue
        base = _find_base_shape(base_shapes, module)
        if base is None:
            raise RunError(f"adapter trained on a different base model: {adapter_dir} has "
                           f"'{module}' but {base_dir} has no such weight")
        dim = shape[1] if kind == "lora_A" else shape[0]
        want = base[1] if kind == "lora_A" else base[0]
        if dim != want:
            raise RunError(f"adapter trained on a different base model: '{module}' expects size "
                           f"{dim} but {base_dir} has {want}")


def _lora_module(name: str) -> tuple[str | None, str]:
    for kind in ("lora_A", "lora_B"):
        if f".{kind}." in name:
            module = name.split(f".{kind}.")[0]
            return module.removeprefix("base_model.model."), kind
    return None, ""


def _find_base_shape(base_shapes: dict[str, tuple], module: str) -> tuple | None:
    # PEFT prefixes differ by task wrapper; match on the longest common suffix.
    key = module + ".weight"
    if key in base_shapes:
        return base_shapes[key]
    for name, shape in base_shapes.items():
        if name.endswith(key) or key.endswith(name):
            return shape
    return None


def safetensors_shapes(path: Path) -> dict[str, tuple]:
    """Tensor name -> shape for a safetensors file or every one in a directory (headers only)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    shapes: dict[str, tuple] = {}
    for file in files:
        with file.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes
