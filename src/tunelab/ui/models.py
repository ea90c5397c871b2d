"""The web UI's store, export and job routes: list/pull/remove models, export with downloads."""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from tunelab.ui.context import UIContext, fail, run_cli_or_fail, safe_filename


def model_routes(router: APIRouter, ctx: UIContext) -> None:
    """GET /models, POST /models/pull, DELETE /models/NAME, POST /exports."""
    @router.get("/models")
    def models() -> dict:
        from tunelab.store import Store

        return {"models": [_model_row(e) for e in Store(ctx.home).entries().values()]}

    @router.post("/models/pull")
    def pull(body: dict) -> Any:
        source = str(body.get("source") or "").strip()
        if not source:
            return fail(400, "source: give a hub id, a model directory or a .gguf file", "source")
        argv = ["pull", source] + (["--name", body["name"].strip()] if str(body.get("name") or "").strip() else [])
        return {"job": ctx.jobs.start("pull", argv, {"source": source}).to_dict()}

    @router.delete("/models/{name:path}")
    async def remove(name: str) -> Any:
        return await run_cli_or_fail(["rm", name, "--yes"], 120, f"could not remove '{name}'",
                                     {"removed": name})

    @router.post("/exports")
    def export(body: dict) -> Any:
        return _start_export(ctx, body)


def _model_row(entry) -> dict:
    row = dataclasses.asdict(entry)
    row["template"] = _template_name(Path(entry.path), entry.has_chat_template)
    return row


def _template_name(model_dir: Path, has_own: bool) -> str:
    """The saved template's name, else 'tokenizer' for a model with its own (resolve_template's
    order up to there; the built-in fallbacks would need the tokenizer files read, so: '')."""
    from tunelab.data.errors import TemplateError
    from tunelab.data.templates import saved_template

    try:
        saved = saved_template(model_dir)
    except TemplateError:  # a half-written or foreign file must not break the list
        saved = None
    return saved.name if saved is not None else ("tokenizer" if has_own else "")


EXPORT_FORMATS = ("gguf", "ollama")


def _start_export(ctx: UIContext, body: dict) -> Any:
    """`tunelab export SOURCE --format F --quant Q --out exports/ID/...` as a job."""
    source = str(body.get("source") or "").strip()
    fmt, quant = str(body.get("format") or "gguf"), str(body.get("quant") or "q8_0")
    if not source:
        return fail(400, "source: name a run or a model", "source")
    if fmt not in EXPORT_FORMATS:
        return fail(400, f"format: '{fmt}' is not one of {', '.join(EXPORT_FORMATS)}", "format")
    run = ctx.runs_dir / source
    target = str(run) if re.match(r"^[\w.-]+$", source) and run.is_dir() else source
    stem = safe_filename(source)
    out_dir = ctx.exports_dir / f"{stem}-{uuid.uuid4().hex[:6]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir if fmt == "ollama" else out_dir / f"{stem}-{quant}.gguf"
    argv = ["export", target, "--format", fmt, "--quant", quant, "--out", str(out)]
    job = ctx.jobs.start("export", argv, {"source": source, "format": fmt, "quant": quant,
                                          "out_dir": str(out_dir)})
    return {"job": job.to_dict()}


def job_routes(router: APIRouter, ctx: UIContext) -> None:
    """Job status, cancel, and downloads of the files a finished export wrote."""
    @router.get("/jobs")
    def jobs(kind: str | None = None) -> dict:
        return {"jobs": [_job_view(j) for j in ctx.jobs.list(kind)]}

    @router.get("/jobs/{job_id}")
    def job(job_id: str) -> dict:
        return _job_view(_job(ctx, job_id))

    @router.post("/jobs/{job_id}/stop")
    def stop(job_id: str) -> dict:
        ctx.jobs.stop(_job(ctx, job_id))
        return {"stopping": job_id}

    @router.get("/jobs/{job_id}/files/{filename}/download")
    def download(job_id: str, filename: str) -> Any:
        files = {p.name: p for p in _job_files(_job(ctx, job_id))}
        if filename not in files:
            raise HTTPException(404, f"job {job_id} has no file '{filename}'")
        return FileResponse(files[filename], filename=filename)


def _job(ctx: UIContext, job_id: str):
    job = ctx.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job '{job_id}'")
    return job


def _job_files(job) -> list[Path]:
    """Finished files an export job left in its folder (temp files excluded)."""
    out_dir = Path(job.meta.get("out_dir") or "")
    if job.state != "finished" or not job.meta.get("out_dir") or not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.rglob("*") if p.is_file() and not p.name.endswith((".tmp", ".part")))


def _job_view(job) -> dict:
    view = job.to_dict()
    view["files"] = [{"name": p.name, "bytes": p.stat().st_size} for p in _job_files(job)]
    return view
