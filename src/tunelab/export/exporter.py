"""`tunelab export`: a run (merged on the fly) or a stored model -> GGUF or Ollama bundle."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from tunelab.data.templates import ChatTemplate, resolve_template
from tunelab.atomic import atomic_dir, atomic_file, sweep_dead
from tunelab.export.errors import ExportError
from tunelab.export.gguf import families, write_gguf
from tunelab.export.modelfile import ollama_template, render_modelfile
from tunelab.export.quantize import parse_quant
from tunelab.errors import RewardModelError
from tunelab.models.registry import is_reward_model
from tunelab.rundir import Run, find_run, load_finished

FORMATS = ("gguf", "ollama")


@dataclasses.dataclass
class ExportResult:
    """What an export wrote, and for Ollama the command that imports it."""

    path: Path
    gguf: Path
    ollama_command: str | None = None
    mmproj: Path | None = None  # a vision-language model's projector file, beside the GGUF


def export(spec: str, fmt: str = "gguf", quant: str = "q8_0", out: Path | None = None,
           system: str | None = None, log: Callable[[str], None] = print) -> ExportResult:
    """Export run or model `spec`; every input check runs before anything is written."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    q = parse_quant(quant)
    run = load_finished(spec) if find_run(spec) is not None else None
    if run is not None:
        run.require_generative("exported to GGUF or Ollama")
    model_dir = (run.model_dir or run.base_model) if run else _resolve(spec)
    mmproj = _check_supported(model_dir, fmt)
    name = _slug(run.name if run else model_dir.name)
    template = run.chat_template() if run else resolve_template(model_dir)
    if fmt == "ollama":
        ollama_template(template)  # fail on custom jinja before the slow part
    filename = f"{name}-{q.name}.gguf" if fmt == "gguf" else f"{name}-ollama"
    dest = Path(out) if out else _default_out(run, name, filename)
    _sweep_beside(dest, log)
    earlier = None if mmproj else _fresh_gguf(run, name, q.name, dest)
    if earlier is not None:  # the same run and quant, exported after the run finished: link, not redo
        log(f"reusing {earlier} (same run and quant; the run has not changed since)")
        if fmt == "gguf":
            with atomic_file(dest) as tmp:
                _link_or_copy(earlier, tmp)
            log(f"wrote {dest}")
            return ExportResult(dest, dest)
        return _ollama(lambda path: _link_or_copy(earlier, path), name, q.name, template, system, dest, log)
    with _work_dir(log) as work:
        source = _merged(run, work, log) if run and run.adapter_dir else model_dir
        if fmt == "gguf":
            result = ExportResult(dest, write_gguf(source, dest, q.name, template, log))
            if mmproj:
                result.mmproj = _write_mmproj(mmproj, source, dest, log)
            return result
        write = lambda path: write_gguf(source, path, q.name, template, log=lambda _m: None)  # noqa: E731
        return _ollama(write, name, q.name, template, system, dest, log)


def _fresh_gguf(run: Run | None, name: str, quant: str, dest: Path) -> Path | None:
    """A GGUF of this run in this quant that an earlier export wrote after the run's last change."""
    if run is None:
        return None
    parts = [p for d in (run.adapter_dir, run.model_dir) if d is not None for p in Path(d).rglob("*") if p.is_file()]
    changed = max((p.stat().st_mtime for p in parts), default=float("inf"))
    gguf = f"{name}-{quant}.gguf"
    for earlier in (run.path / "export" / gguf, run.path / "export" / f"{name}-ollama" / gguf):
        if earlier.resolve() != Path(dest).resolve() and earlier.is_file() and earlier.stat().st_mtime >= changed:
            return earlier
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes `src`: a hard link (no second copy on disk), or a copy across filesystems."""
    Path(dst).unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _sweep_beside(dest: Path, log: Callable[[str], None]) -> None:
    """Remove what a killed export to `dest` left beside it (its owner-tagged temp file)."""
    from tunelab.store.describe import human_bytes

    freed = sweep_dead(dest.parent, f".{dest.name}.tmp-*")
    if freed:
        log(f"removed {human_bytes(freed)} left beside {dest} by a killed export")


def _work_dir(log: Callable[[str], None]):
    """Scratch space (the merged model) under the store's tmp/, not /tmp: swept after a kill."""
    from tunelab.store import Store
    from tunelab.store.staging import work_dir

    return work_dir(Store(), "export", log)


def _resolve(spec: str) -> Path:
    from tunelab.store.resolve import resolve_model

    return resolve_model(spec)


def _check_supported(model_dir: Path, fmt: str):
    """Refuse what cannot be exported; for a VLM llama.cpp runs, the plan of its mmproj file."""
    config_path = model_dir / "config.json"
    mmproj = _vision_plan(model_dir, config_path, fmt)
    config = families.text_config(json.loads(config_path.read_text(encoding="utf-8")))
    if is_reward_model(config.get("architectures") or []):
        raise RewardModelError(str(config_path), "exported to GGUF or Ollama")
    families.family_for(config, str(config_path))
    return mmproj


def _vision_plan(model_dir: Path, config_path: Path, fmt: str):
    """A vision-language model's GGUF needs llama.cpp's mmproj projector file beside it: planned here
    (plan_mmproj refuses a family or layout llama.cpp cannot run) before anything is written."""
    from tunelab.export.gguf.mmproj import plan_mmproj
    from tunelab.vision.family import is_vision_model, model_type

    kind = model_type(model_dir)
    if not is_vision_model(model_dir):
        return None
    if fmt == "ollama":
        raise ExportError(f"{config_path}: {kind} is a vision-language model; --format ollama is refused for it: "
                          "tunelab writes llama.cpp's GGUF + mmproj pair, and that Ollama loads this pair for the "
                          "family is not verified. Nothing was written; use --format gguf for llama.cpp")
    return plan_mmproj(model_dir)


def _write_mmproj(plan, source: Path, dest: Path, log: Callable[[str], None]) -> Path:
    """The mmproj file beside `dest`, from the (merged) weights in `source`."""
    from tunelab.export.gguf.mmproj import mmproj_name, retarget, write_mmproj

    return write_mmproj(retarget(plan, source), dest.parent / mmproj_name(dest.name), log)


def _merged(run: Run, work: Path, log: Callable[[str], None]) -> Path:
    from tunelab.export.merge import merge_run

    return merge_run(run, work / "merged", log=lambda msg: log(msg) if "QLoRA" in msg else None)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", text).strip("-").lower() or "model"


def _default_out(run: Run | None, name: str, filename: str) -> Path:
    return (run.path / "export" / filename) if run else Path.cwd() / filename


def _ollama(write: Callable[[Path], object], name: str, quant: str, template: ChatTemplate,
            system: str | None, out: Path, log: Callable[[str], None]) -> ExportResult:
    """The bundle: the GGUF (`write(path)` puts it there) beside a Modelfile."""
    out = Path(out)
    gguf_name = f"{name}-{quant}.gguf"
    with atomic_dir(out) as tmp:
        write(tmp / gguf_name)
        (tmp / "Modelfile").write_text(render_modelfile(gguf_name, template, system), encoding="utf-8")
    command = f"ollama create {name} -f {out / 'Modelfile'}"
    log(f"wrote {out}/ (Modelfile + {gguf_name})\nimport it into Ollama with:\n  {command}")
    return ExportResult(out, out / gguf_name, command)
