"""The web UI's JSON API under /ui/api, and `mount_ui` which adds it and the static pages.

Handlers validate and hand work to subprocess jobs (`tunelab train`, `pull`,
`export`, `data check`), so a slow or crashing job never blocks or kills the
server. The API sits behind the server's API key like /v1; only the static pages
under /ui are public, because the page itself asks for the key.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from tunelab.errors import TunelabError
from tunelab.rundir import Run
from tunelab.serve.auth import bearer_token, key_matches
from tunelab.ui import forms as ui_forms
from tunelab.ui import models as ui_models
from tunelab.ui import runs as ui_runs
from tunelab.ui.context import UIContext, fail, run_cli, run_cli_or_fail, safe_filename
from tunelab.ui.jobs import JobManager

STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
CHECK_TIMEOUT_S = 300


def mount_ui(app: FastAPI, api_key: str | None = None, runs_dir: str | Path = "runs") -> UIContext:
    """Add /ui/api and the static pages at /ui to `app`; returns the context (jobs, paths)."""
    from fastapi.staticfiles import StaticFiles

    from tunelab.store import tunelab_home

    home = tunelab_home()
    ctx = UIContext(Path(runs_dir).resolve(), home, api_key, JobManager(home / "jobs"))
    app.include_router(build_router(ctx))
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")  # after the API routes
    app.state.ui = ctx
    return ctx


def build_router(ctx: UIContext) -> APIRouter:
    """All /ui/api routes over one context."""
    router = APIRouter(prefix="/ui/api", dependencies=[Depends(_auth(ctx))])
    _run_routes(router, ctx)
    _data_routes(router, ctx)
    ui_models.model_routes(router, ctx)
    ui_models.job_routes(router, ctx)
    return router


def _auth(ctx: UIContext):
    def check(request: Request) -> None:
        given = bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if given is None and request.url.path.endswith("/download"):
            given = request.query_params.get("key")  # a plain <a href> link cannot send headers
        if not key_matches(ctx.api_key, given):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")

    return check


# ---- runs -------------------------------------------------------------------------------------


def _run_routes(router: APIRouter, ctx: UIContext) -> None:
    @router.get("/runs")
    def runs() -> dict:
        listed = ui_runs.list_runs(ctx.runs_dir)
        names = {r["name"] for r in listed}
        pending = [_job_run(job) for job in ctx.jobs.list("train") if job.meta["run"] not in names]
        return {"runs": pending + listed, "runs_dir": str(ctx.runs_dir)}

    @router.get("/runs/{name}")
    def run(name: str) -> Any:
        job = ctx.jobs.find("train", run=name)
        path = _maybe_run(ctx, name)
        if path is None and job is None:
            raise HTTPException(404, f"no run named '{name}'")
        detail = ui_runs.run_detail(path) if path else _job_run(job)
        if detail["state"] == "new" and _running(job):
            detail["state"] = "starting"  # the trainer made its folder but has not written its status yet
        detail["job"] = job.to_dict() if job else None
        return detail

    @router.get("/runs/{name}/metrics")
    def metrics(name: str, since: int = 0) -> dict:
        path = _maybe_run(ctx, name)
        rows, next_line = Run(path).read_metrics(since) if path else ([], since)
        return {"rows": rows, "next": next_line}

    @router.get("/runs/{name}/log")
    def log(name: str, lines: int = 200) -> dict:
        path = _maybe_run(ctx, name)
        job = ctx.jobs.find("train", run=name)
        tail = Run(path).log_tail(lines) if path else []
        return {"lines": tail or (list(job.tail)[-lines:] if job else [])}

    @router.get("/runs/{name}/report/download")
    def report(name: str) -> Any:
        found = Run(_run_path(ctx, name)).report_file
        if not found.is_file():
            raise HTTPException(404, f"run '{name}' has no report yet: run `tunelab report {name}`")
        return FileResponse(found, media_type="text/html")

    @router.get("/runs/{name}/tensorboard/download")
    def tensorboard_logs(name: str) -> Response:
        try:
            data = ui_runs.tensorboard_zip(Run(_run_path(ctx, name)))
        except ui_runs.RunNotFound as err:
            raise HTTPException(404, str(err)) from None
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}-tensorboard.zip"'})

    @router.post("/runs/{name}/report")
    async def write_report(name: str) -> Any:
        return await run_cli_or_fail(["report", str(_run_path(ctx, name))], CHECK_TIMEOUT_S,
                                     f"could not write the report of '{name}'", {"written": name})

    @router.get("/train/choices")
    def train_choices() -> dict:
        return ui_forms.choices()

    @router.post("/runs/plan")
    def plan(form: dict) -> Any:
        return _plan(ctx, form)

    @router.post("/runs")
    def start(form: dict) -> Any:
        return _start_run(ctx, form)

    @router.post("/runs/{name}/stop")
    def stop(name: str) -> dict:
        return _stop_run(ctx, name)


def _run_path(ctx: UIContext, name: str) -> Path:
    """runs_dir/NAME, or a 400 for an unsafe name and a 404 for a missing run."""
    try:
        return ui_runs.run_dir(ctx.runs_dir, name)
    except ui_runs.RunNotFound as err:
        raise HTTPException(404, str(err)) from None
    except TunelabError as err:
        raise HTTPException(400, str(err)) from None


def _maybe_run(ctx: UIContext, name: str) -> Path | None:
    try:
        return _run_path(ctx, name)
    except HTTPException as err:
        if err.status_code == 404:
            return None
        raise


def _job_run(job) -> dict:
    """A run that exists so far only as a job (its process has not written its status yet)."""
    state = "starting" if job.state == "running" else job.state
    return {"name": job.meta["run"], "state": state, "step": 0, "total_steps": 0,
            "final_loss": None, "method": job.meta.get("method", ""), "model": job.meta.get("model", ""),
            "started": job.started, "updated": job.started, "error": job.error_line()}


def _form_flat(ctx: UIContext, form: dict) -> tuple[str, dict]:
    flat = ui_forms.clean_form({k: v for k, v in form.items() if k != "name"})
    if isinstance(flat.get("datasets"), str):
        flat["datasets"] = _path_list(flat["datasets"])
    name = str(form.get("name") or "").strip() or time.strftime("ui-%Y%m%d-%H%M%S")
    try:
        ui_runs.check_run_name(name)
    except TunelabError as err:
        raise ui_forms.FormError("name", str(err)) from None
    flat["output"] = str(ctx.runs_dir / name)
    return name, ui_forms.split_lists(flat)


def _path_list(value: str | list[str]) -> list[str]:
    """Dataset paths from a comma-separated string or a list, trimmed, blanks dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return [p.strip() for p in items if p.strip()]


def _plan(ctx: UIContext, form: dict) -> Any:
    """Validate the form; return the CLI line and YAML it stands for."""
    try:
        name, flat = _form_flat(ctx, form)
        ui_forms.validate_train(flat)
    except ui_forms.FormError as err:
        return fail(400, str(err), err.field)
    return {"name": name, "cli": ui_forms.cli_line(flat), "yaml": ui_forms.yaml_text(flat),
            "args": ui_forms.train_args(flat)}


def _start_run(ctx: UIContext, form: dict) -> Any:
    planned = _plan(ctx, form)
    if isinstance(planned, JSONResponse):
        return planned
    name = planned["name"]
    if (ctx.runs_dir / name).exists() or _running(ctx.jobs.find("train", run=name)):
        return fail(409, f"a run named '{name}' already exists; pick another name", "name")
    ctx.runs_dir.mkdir(parents=True, exist_ok=True)
    meta = {"run": name, "method": form.get("method", ""), "model": form.get("model", "")}
    job = ctx.jobs.start("train", ["train", *planned["args"]], meta)
    return {**planned, "job": job.to_dict()}


def _running(job) -> bool:
    return job is not None and job.state == "running"


def _stop_run(ctx: UIContext, name: str) -> dict:
    """SIGTERM the run's process: the trainer saves a checkpoint and marks itself stopped."""
    job = ctx.jobs.find("train", run=name)
    if _running(job):
        ctx.jobs.stop(job)
        return {"stopping": name}
    run = Run(_run_path(ctx, name))
    try:
        stopped = run.stop()  # signals the run's own trainer only, never a process that reused its PID
    except TunelabError as err:
        raise HTTPException(409, str(err)) from None
    if not stopped:
        raise HTTPException(409, f"run '{name}' is not running (state: {run.state})")
    return {"stopping": name}


# ---- data -------------------------------------------------------------------------------------


def _data_routes(router: APIRouter, ctx: UIContext) -> None:
    @router.post("/uploads")
    async def upload(request: Request, filename: str, upload: str = "", last: bool = True) -> Any:
        return await _save_chunk(ctx, request, filename, upload, last)

    @router.post("/data/check")
    async def check(body: dict) -> Any:
        return await _data_check(body)


async def _save_chunk(ctx: UIContext, request: Request, filename: str, upload_id: str, last: bool) -> Any:
    """Append one chunk of an upload to uploads/ID-NAME.part; the last chunk renames it.

    The browser sends files in chunks smaller than the server's body limit, so a dataset
    of any size uploads without raising that limit for the API.
    """
    safe = safe_filename(filename).strip("._") or "data.jsonl"
    upload_id = upload_id or uuid.uuid4().hex[:10]
    if not re.fullmatch(r"[0-9a-f]{10}", upload_id):
        return fail(400, f"upload: bad upload id '{upload_id}'", "upload")
    ctx.uploads_dir.mkdir(parents=True, exist_ok=True)
    final = ctx.uploads_dir / f"{upload_id}-{safe}"
    part = final.with_name(final.name + ".part")
    with open(part, "ab") as out:
        async for chunk in request.stream():
            out.write(chunk)
    size = part.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        part.unlink()
        return fail(413, f"upload over {MAX_UPLOAD_BYTES >> 20} MB; give a path instead", "upload")
    if not last:
        return {"upload": upload_id, "bytes": size}
    if size == 0:
        part.unlink()
        return fail(400, f"{filename}: the file is empty", "upload")
    os.replace(part, final)
    return {"upload": upload_id, "path": str(final), "bytes": size}


async def _data_check(body: dict) -> Any:
    """Run `tunelab data check` on the given paths; its report text and verdict come back."""
    paths = _path_list(body.get("datasets") or [])
    if not paths:
        return fail(400, "dataset: upload a file or give a path", "datasets")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        return fail(400, f"dataset not found: {missing[0]}", "datasets")
    argv = ["data", "check", *paths]
    if str(body.get("model") or "").strip():
        argv += ["--model", str(body["model"]).strip()]
    if str(body.get("cutoff") or "").strip():
        argv += ["--cutoff", str(body["cutoff"]).strip()]
    code, text = await run_cli(argv, CHECK_TIMEOUT_S)
    return {"ok": code == 0, "returncode": code, "report": text,
            "command": "tunelab " + " ".join(argv)}


