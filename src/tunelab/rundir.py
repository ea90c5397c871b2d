"""The run directory: the one owner of its layout, its status.json and whether its trainer lives.

    runs/NAME/
      status.json  config.yaml  metrics.jsonl  train.log  summary.json  eval.json  report.html
      heldout.jsonl (the eval split the trainer held out, tokenized: what `tunelab eval` scores)
      adapter/ (PEFT, with tunelab_template.json) or model/ (full, freeze)   checkpoints/step-N/
      tensorboard/ (event files, with report_to: tensorboard)

`tunelab train` writes it through `Run`; serve, export, eval, the UI and the CLI read it through
`Run` too and never open its files themselves. The trainer writes the states starting, running,
finished, failed and stopped, with its pid and start time (`tunelab.process`); readers see
`crashed` for a starting/running run whose process is gone. JSON and YAML are written to a temp
file and renamed, so readers never see half a file; a corrupt status.json is a RunError naming it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab import process
from tunelab.atomic import read_json_object, write_text_atomic
from tunelab.errors import RunError

if TYPE_CHECKING:
    from tunelab.data.templates import ChatTemplate

STATUS_FILE = "status.json"
LIVE_STATES = ("starting", "running")  # written while the trainer works; `crashed` once it is gone
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HELD_OUT_FILE = "heldout.jsonl"
_OWN_FILES = (STATUS_FILE, "config.yaml", "metrics.jsonl", "train.log", "summary.json", HELD_OUT_FILE)


class Run:
    """One run's folder: where its parts live, its status and state, its metrics and log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.status_file = self.path / STATUS_FILE
        self.eval_file = self.path / "eval.json"
        self.report_file = self.path / "report.html"
        self.held_out_file = self.path / HELD_OUT_FILE
        self.tensorboard_dir = self.path / "tensorboard"

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The folder name, which is the run's name."""
        return self.path.name

    def exists(self) -> bool:
        """True once the trainer has written status.json."""
        return self.status_file.is_file()

    # ---- status and state -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """status.json ({} when missing); a corrupt file is a RunError naming it."""
        return read_json_object(self.status_file, RunError) if self.exists() else {}

    @property
    def state(self) -> str:
        """starting|running|finished|failed|stopped as written, `crashed` for a live state whose
        process is gone, `new` without status.json, `corrupt` when status.json cannot be read."""
        try:
            status = self.status()
        except RunError:
            return "corrupt"
        state = str(status.get("state") or ("new" if not status else "unknown"))
        if state in LIVE_STATES and not process.owner_alive(status):
            return "crashed"
        return state

    @property
    def is_alive(self) -> bool:
        """True while the trainer process that wrote this run is still working on it."""
        return self.state in LIVE_STATES

    def stop(self) -> bool:
        """SIGTERM the run's own trainer (it checkpoints and marks itself stopped); False when it is
        not running. A PID since reused by another process is never signalled."""
        status = self.status()
        if self.state not in LIVE_STATES:
            return False
        if status.get("pid_start") is None:
            raise RunError(f"{self.status_file}: no process start time recorded (an older tunelab wrote it), "
                           f"so pid {status.get('pid')} cannot be told from a stranger; stop it yourself")
        return process.signal_owner(status)

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json and stamp `updated`."""
        status = self.status() | fields | {"updated": time.time()}
        write_text_atomic(self.status_file, json.dumps(status, indent=2))
        return status

    def mark_owner(self, state: str, **fields: Any) -> dict[str, Any]:
        """Record this process (pid, start time, host) as the run's trainer, in `state`."""
        return self.update_status(state=state, **process.owner(), **fields)

    # ---- where the parts live -------------------------------------------------------------------

    @property
    def model_dir(self) -> Path | None:
        """model/ of a full or freeze fine-tune, once saved."""
        path = self.path / "model"
        return path if (path / "config.json").is_file() else None

    @property
    def adapter_dir(self) -> Path | None:
        """adapter/ (PEFT) of a LoRA-family run, once saved; None for full/freeze runs."""
        path = self.path / "adapter"
        return path if self.model_dir is None and (path / "adapter_config.json").is_file() else None

    @property
    def base_model(self) -> Path | None:
        """The resolved base model path the run trained on (as recorded; see `load_finished`)."""
        base = self.status().get("base_model")
        return Path(str(base)) if base else None

    @property
    def method(self) -> str:
        """lora, qlora, dora, full, freeze ... as recorded."""
        return str(self.status().get("method", "lora"))

    @property
    def stage(self) -> str:
        """sft, dpo, kto, orpo, simpo, rm ... as configured (config.yaml); sft when not recorded."""
        return str(self.read_config().get("stage") or "sft") if (self.path / "config.yaml").is_file() else "sft"

    @property
    def is_reward_model(self) -> bool:
        """stage=rm: a scalar score head in place of the LM head; it scores text, it cannot generate."""
        return self.stage == "rm"

    def require_generative(self, action: str) -> None:
        """RewardModelError naming the run when it is a reward model (`action`: what was asked of it)."""
        from tunelab.errors import RewardModelError

        if self.is_reward_model:
            raise RewardModelError(f"run '{self.name}'", action)

    @property
    def is_qlora(self) -> bool:
        """QLoRA trains against a 4-bit base; merging must use a dequantized 16-bit one."""
        return self.method.lower() == "qlora"

    def tensorboard_logs(self) -> Path | None:
        """tensorboard/ once the run's TensorBoard tracker has written event files there, else None."""
        if not self.tensorboard_dir.is_dir():
            return None
        return self.tensorboard_dir if any(self.tensorboard_dir.glob("events.out.tfevents.*")) else None

    def chat_template(self) -> ChatTemplate:
        """The ChatTemplate training used (saved with the adapter or model), by `resolve_template`."""
        from tunelab.data.templates import resolve_template

        return resolve_template(self.model_dir or self.base_model, self.adapter_dir)

    # ---- config, metrics, log, summary ------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        """The resolved config as YAML."""
        import yaml

        write_text_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The saved config.yaml of this run."""
        from tunelab.config import read_yaml

        return read_yaml(self.path / "config.yaml")

    def config_text(self) -> str:
        """config.yaml as written ('' before it exists)."""
        path = self.path / "config.yaml"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One line of metrics.jsonl (appends are line-sized, so readers see whole lines)."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """metrics.jsonl rows from line `since` on, and the line count to ask from next time."""
        file = self.path / "metrics.jsonl"
        if not file.is_file():
            return [], since
        complete = file.read_text(encoding="utf-8").split("\n")[:-1]  # the last piece may be half-written
        rows = []
        for line in complete[since:]:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn line (a crash mid-append) is skipped, the count stays aligned
        return [r for r in rows if isinstance(r, dict)], len(complete)

    def metrics(self) -> list[dict[str, Any]]:
        """All metrics rows written so far."""
        return self.read_metrics()[0]

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics rows past `step` (a resumed run runs those steps again)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        write_text_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def log(self, line: str) -> None:
        """Append a timestamped line to train.log."""
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")

    def log_tail(self, lines: int = 200) -> list[str]:
        """The last `lines` lines of train.log (reads at most the last 256 KB)."""
        file = self.path / "train.log"
        if not file.is_file():
            return []
        with open(file, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace")
        return [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()][-lines:]

    def train_config(self):
        """config.yaml as the trainer's TrainConfig (pref.beta, seed, data.cutoff_len ...)."""
        from tunelab.config import load_config
        from tunelab.train.config import TrainConfig

        return load_config(TrainConfig, self.path / "config.yaml")

    def write_held_out(self, examples: list) -> None:
        """heldout.jsonl: the tokenized eval split (SFT examples, pairs or KTO replies), one per line."""
        lines = (json.dumps({k: v for k, v in vars(e).items() if k != "ref_logps"}) + "\n" for e in examples)
        write_text_atomic(self.held_out_file, "".join(lines))

    def held_out(self) -> list:
        """The eval split the trainer held out, as `Example`s, `PreferenceExample`s or (stage=grpo)
        `PromptExample`s ([] when none)."""
        from tunelab.data.prompts import PromptExample
        from tunelab.data.tokenize import Example, PreferenceExample

        if not self.held_out_file.is_file():
            return []
        rows = [json.loads(line) for line in self.held_out_file.read_text(encoding="utf-8").splitlines() if line]
        kinds = (("messages", PromptExample), ("prompt_ids", PreferenceExample))  # a GRPO prompt has prompt_ids too
        return [next((kind for key, kind in kinds if key in r), Example)(**r) for r in rows]

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json: the final numbers of the run."""
        write_text_atomic(self.path / "summary.json", json.dumps(summary, indent=2))

    def summary(self) -> dict[str, Any]:
        """summary.json ({} before the run ends)."""
        return read_json_object(self.path / "summary.json")

    def discard(self, created: bool) -> None:
        """Remove a run that failed before training: the folder if `created`, else only our files."""
        if created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in _OWN_FILES:
            (self.path / name).unlink(missing_ok=True)


# ---- finding runs ---------------------------------------------------------------------------------


def default_run_name(model: str | None, method: str) -> str:
    """runs/<model>-<method>-<YYYYmmdd-HHMMSS>."""
    base = Path(str(model)).name if model else "gemma3-270m"
    return f"{base}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def list_runs(root: str | Path = "runs") -> list[Run]:
    """Every run (folder with status.json) under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if (p / STATUS_FILE).is_file()]
    return sorted(runs, key=_started, reverse=True)


def _started(run: Run) -> float:
    try:
        started = run.status().get("started", 0)
    except RunError:
        return 0.0
    return float(started) if isinstance(started, (int, float)) else 0.0


def runs_for_model(model_path: str | Path, root: str | Path = "runs") -> list[Run]:
    """The runs under `root` trained on the model at `model_path` (corrupt ones are skipped)."""
    target = Path(model_path).resolve()
    found = []
    for run in list_runs(root):
        try:
            base = run.base_model
        except RunError:
            continue
        if base is not None and base.resolve() == target:
            found.append(run)
    return found


def find_run(spec: str | Path) -> Run | None:
    """A run path, or a run name under ./runs or $TUNELAB_HOME/runs; None if not a run."""
    from tunelab.store import tunelab_home

    path = Path(spec).expanduser()
    for cand in (path, Path("runs") / str(spec), tunelab_home() / "runs" / str(spec)):
        if (cand / STATUS_FILE).is_file():
            return Run(cand.resolve())
    return None


def require_run(spec: str | Path) -> Run:
    """Like `find_run`, but a missing run is a RunError saying where it looked."""
    run = find_run(spec)
    if run is None:
        raise RunError(f"no run at '{spec}' (looked for {STATUS_FILE} there, in ./runs and in $TUNELAB_HOME/runs)")
    return run


def open_run(path: str | Path) -> Run:
    """An existing run directory to resume, or a clear error."""
    run = Run(path)
    if not (run.path / "config.yaml").exists():
        raise RunError(f"{run.path}: not a tunelab run directory (no config.yaml)")
    return run


def load_finished(spec: str | Path) -> Run:
    """The run `spec`, checked usable: finished, base model present, adapter present and fitting."""
    from tunelab.store.weights import check_adapter_fits_base

    run = require_run(spec)
    status = run.status()
    _check_not_training(run, status)
    _check_base_model(run, status)
    if run.model_dir is not None:
        return run
    _check_adapter(run.path / "adapter")
    check_adapter_fits_base(run.path / "adapter", run.base_model)
    return run


def _check_not_training(run: Run, status: dict) -> None:
    state = run.state
    if state in LIVE_STATES:
        step, total = status.get("step", "?"), status.get("total_steps", "?")
        raise RunError(f"run '{run.name}' is still training (step {step}/{total}); "
                       "wait for it to finish or stop it first")
    if state in ("failed", "new", "unknown"):
        raise RunError(f"{run.status_file}: run state is '{status.get('state')}', not finished")


def _check_base_model(run: Run, status: dict) -> None:
    base = status.get("base_model")
    if not base:
        raise RunError(f"{run.status_file}: field 'base_model' is missing")
    if not (Path(str(base)) / "config.json").is_file():
        raise RunError(f"{run.status_file}: base_model '{base}' is not a model directory "
                       "(no config.json); was it deleted from the store?")


def _check_adapter(adapter_dir: Path) -> None:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RunError(f"missing adapter file: {adapter_dir / 'adapter_config.json'}")
    if not any((adapter_dir / w).is_file() for w in ADAPTER_WEIGHTS):
        raise RunError(f"missing adapter file: {adapter_dir / ADAPTER_WEIGHTS[0]}")
