"""The training loop: one plain function from config to a finished run directory.

    train(cfg)  -> check method -> resolve model -> data -> model + method -> fit -> save
    fit         -> for each optimizer step: grad_accum micro-batches -> clip -> step -> log/eval/save

Everything stochastic (data order, LoRA init, dropout) flows from cfg.seed, and a
checkpoint stores the loop position plus optimizer/scheduler/RNG state, so resuming
reproduces the uninterrupted run. Under a launcher (torchrun, accelerate launch) every
process runs this same loop on every N-th micro-batch of the plan; train/distributed.py
holds the few points where the processes must agree.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

from tunelab.config import load_config, to_dict
from tunelab.errors import TunelabError
from tunelab.rundir import Run, default_run_name, open_run
from tunelab.train import checkpoint as ckpt
from tunelab.train import distributed as dist, sharding
from tunelab.train.config import TrainConfig
from tunelab.train.display import ProgressView, print_outcome
from tunelab.train.grpo import start_step
from tunelab.train.metrics import MetricsWriter, closed_on_failure, peak_mem_mb
from tunelab.train.packing import IGNORE, MicroBatch, collate, example_tokens, plan_epoch
from tunelab.train.pairs import take_stats
from tunelab.train.signals import stop_on_signals

StepHook = Callable[[dict[str, Any]], Any]


class NonFiniteLoss(TunelabError):
    """The loss became NaN or infinite."""


class OutOfMemory(TunelabError):
    """The device ran out of memory; the message says which setting to lower."""


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    state: str
    step: int
    final_loss: float | None
    eval_loss: float | None


@dataclasses.dataclass
class Session:
    """Everything the loop touches, built once by `train`."""

    cfg: TrainConfig
    run: Run
    accelerator: Any
    model: torch.nn.Module  # the PEFT/HF model, for saving
    wrapped: torch.nn.Module  # SelectedLogitsLoss or PreferenceObjective, as prepared by accelerate
    optimizer: Any
    scheduler: Any
    train_ex: list
    eval_ex: list
    pad_id: int
    tokenizer: Any
    template: Any
    state: ckpt.LoopState = dataclasses.field(default_factory=ckpt.LoopState)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    last_row: dict[str, Any] = dataclasses.field(default_factory=dict)
    step_lr: float = 0.0
    plans: dict[int, list] = dataclasses.field(default_factory=dict)
    metrics: MetricsWriter | None = None  # main process only

    def epoch_steps(self, epoch: int) -> list[list[MicroBatch]]:
        """This rank's micro-batches of `epoch`, grouped into optimizer steps (cached)."""
        if epoch not in self.plans:
            self.plans[epoch] = self._plan(epoch)
        return self.plans[epoch]

    def _plan(self, epoch: int) -> list[list[MicroBatch]]:
        cfg, acc = self.cfg, self.accelerator
        lengths = [example_tokens(e) for e in self.train_ex]
        plan = plan_epoch(lengths, cfg.micro_batch_size, cfg.data.cutoff_len, cfg.packing, cfg.seed, epoch)
        world = acc.num_processes
        if len(plan) < world:
            raise TunelabError(f"{len(plan)} micro-batches per epoch cannot feed {world} processes; "
                               "lower micro_batch_size or launch fewer processes")
        plan = plan[: len(plan) // world * world][acc.process_index :: world] if world > 1 else plan
        return [plan[i : i + cfg.grad_accum] for i in range(0, len(plan), cfg.grad_accum)]

    def total_steps(self) -> int:
        """max_steps, or all steps of all epochs."""
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        return sum(len(self.epoch_steps(e)) for e in range(self.cfg.epochs))


def train(
    cfg: TrainConfig | None = None,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    examples: tuple[list, list] | None = None,
    console=None,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Run (or resume) one fine-tuning run; `examples` bypasses the data files (tests, quickstart)."""
    from rich.console import Console

    from tunelab.plan.guard import check_memory_plan
    from tunelab.train.methods import check_method

    console = console or Console(stderr=True)
    if not dist.process_state().is_main_process:
        console = Console(quiet=True)  # one summary and one progress view, from the main process
    run, cfg, created = _open_or_create(cfg, resume, overrides)
    try:
        check_method(cfg)  # before anything heavy is loaded
        MetricsWriter.check(cfg.report_to)  # a missing tracker library, before loading
        check_memory_plan(cfg, examples[0] if examples else None, data_read=False)  # config.json only
        session = _build_session(cfg, run, examples, console, resumed=resume is not None)
        session.metrics = MetricsWriter(run, to_dict(cfg), cfg.report_to) if session.accelerator.is_main_process else None
    except BaseException:
        if created is not None and dist.process_state().is_main_process:
            run.discard(created)  # a new run that failed before its first step leaves nothing behind
        raise
    try:
        # under a launcher, a second signal within 2 s is the launcher forwarding the first one
        echo_s = 2.0 if session.accelerator.num_processes > 1 else 0.0
        with stop_on_signals(session.stop, echo_s), closed_on_failure(session.metrics):  # trackers close on errors too
            return _finish(session, fit(session, console, on_step), console)
    except TunelabError as err:
        run.update_status(state="failed", error=str(err))
        run.log(f"failed: {err}")
        raise


def _open_or_create(cfg: TrainConfig | None, resume, overrides) -> tuple[Run, TrainConfig, bool | None]:
    """The run and its config; the bool says whether the folder is new (None when resuming)."""
    if resume is not None:
        run = open_run(resume)
        # the folder being resumed, even if config.yaml still names where the run was first made
        return run, dataclasses.replace(load_config(TrainConfig, run.path / "config.yaml", overrides),
                                        output=str(run.path)), None
    assert cfg is not None, "train() needs a config or a run to resume"
    path, created, error = None, False, None
    if dist.process_state().is_main_process:
        try:
            path, created = _create_run(cfg)
        except TunelabError as err:
            error = str(err)
    # the others take the main process's run dir (and its error, so no process waits forever)
    path, error = dist.broadcast([path, error])
    if error is not None:
        raise TunelabError(error)
    return Run(path), dataclasses.replace(cfg, output=path), created


def _create_run(cfg: TrainConfig) -> tuple[str, bool]:
    """A new run dir holding the resolved config.yaml and a `starting` status owned by this process;
    an error when `output` already holds a run. Returns its path and whether the folder is new."""
    run = Run(cfg.output or Path("runs") / default_run_name(cfg.model, cfg.method))
    if run.exists():
        raise TunelabError(f"output: {run.path} already holds a run; resume it with --resume {run.path}")
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(to_dict(dataclasses.replace(cfg, output=str(run.path))))
    run.mark_owner("starting", started=time.time(), base_model_spec=cfg.model, method=cfg.method)
    return str(run.path), created


def _build_session(cfg: TrainConfig, run: Run, examples, console, resumed: bool) -> Session:
    from accelerate import Accelerator

    from tunelab.dtypes import resolve_dtype
    from tunelab.plan.guard import check_memory_plan
    from tunelab.store.resolve import resolve_model
    from tunelab.train import methods
    from tunelab.train.pairs import precompute_reference
    from tunelab.train.setup import build_objective, prepare_data, start_facts

    model_dir = resolve_model(cfg.model)
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(cfg.dtype_name(kind), kind)  # CPU bf16: frozen bf16 base, fp32 adapter (no autocast)
    acc = Accelerator(mixed_precision="bf16" if dtype == torch.bfloat16 and kind == "cuda" else "no", cpu=kind == "cpu")
    sharding.check(acc, cfg)  # DeepSpeed refused; what FSDP cannot do named before loading
    tokenizer, template, data = prepare_data(cfg, model_dir, examples)
    check_memory_plan(cfg, data.train)  # at the data's length, before the model loads
    torch.manual_seed(cfg.seed)  # LoRA init and dropout
    model = methods.apply_method(methods.load_model(model_dir, cfg, dtype), cfg, model_dir)
    wrapped, optimizer, scheduler = sharding.prepare(acc, build_objective(model, cfg, data), model, cfg)
    precompute_reference(wrapped, [data.train, data.eval], acc, tokenizer.pad_token_id or 0, cfg.micro_batch_size)
    session = Session(cfg, run, acc, model, wrapped, optimizer, scheduler, data.train, data.eval,
                      tokenizer.pad_token_id or 0, tokenizer, template)
    total = session.total_steps()
    scheduler.set_total(total)
    if resumed:
        session.state = _resume_state(session)
    session.state.processes = acc.num_processes
    if acc.is_main_process:
        from tunelab.train.display import print_summary

        run.mark_owner("running", step=session.state.step, total_steps=total, base_model=str(model_dir),
                       base_model_spec=cfg.model, method=cfg.method, processes=acc.num_processes,
                       started=run.status().get("started", time.time()), final_loss=None)
        run.write_held_out(data.eval)  # `tunelab eval` scores the very examples held out here
        print_summary(console, start_facts(cfg, model, model_dir, data, total, session.state.step))
    return session


def _resume_state(session: Session) -> ckpt.LoopState:
    found = ckpt.list_checkpoints(session.run.checkpoints)
    if not found:
        raise TunelabError(f"{session.run.path}: no checkpoint to resume from (checkpoints/ is empty)")
    state = ckpt.load_checkpoint(found[-1], session.model, session.optimizer, session.scheduler)
    world = session.accelerator.num_processes
    if session.accelerator.is_main_process:
        note = "" if state.processes == world else (
            f" (saved by {state.processes} processes, resumed with {world}: the data order differs from "
            "the uninterrupted run's)")
        session.run.log(f"resumed from {found[-1].name}{note}")
        session.run.truncate_metrics(state.step)
    return state


def fit(session: Session, console, on_step: StepHook | None = None) -> str:
    """The loop; returns 'finished' or 'stopped' (after saving a checkpoint)."""
    cfg, state, total = session.cfg, session.state, session.total_steps()
    session.wrapped.train()
    with ProgressView(console, total, state.step, every=cfg.log_every) as view:
        while state.step < total:
            started = time.perf_counter()
            steps = session.epoch_steps(state.epoch)
            loss, grad_norm, tokens = train_step(session, steps[state.step_in_epoch])
            _advance(state, len(steps), tokens, time.perf_counter() - started)
            row = _log_step(session, loss, grad_norm, tokens, time.perf_counter() - started, total)
            view.update(row, total)
            if on_step is not None and on_step(row):
                session.stop.set()
            # each process gets its own signal, maybe a step apart: all stop after the same step
            if _maybe_save(session, stopping=dist.any_process(session.accelerator, session.stop.is_set())):
                return "stopped"
    return "finished"


def _advance(state: ckpt.LoopState, steps_in_epoch: int, tokens: int, seconds: float) -> None:
    state.step += 1
    state.step_in_epoch += 1
    state.tokens += tokens
    state.elapsed += seconds
    if state.step_in_epoch >= steps_in_epoch:  # epoch done: the next step starts a new permutation
        state.epoch, state.step_in_epoch = state.epoch + 1, 0


def train_step(session: Session, group: list[MicroBatch]) -> tuple[float, float, int]:
    """One optimizer step over `group` (this process's share); returns the step's
    (mean loss per label token, grad norm, tokens), all over every process."""
    acc, ex = session.accelerator, session.train_ex
    n_labels = int(dist.all_sum(acc, [sum(_label_count(ex[i]) for mb in group for i in mb.indices)])[0])
    # DDP averages gradients over processes, so each divides its loss sum by the step's n_labels / N
    denom = max(n_labels, 1) / acc.num_processes
    loss_total, tokens = 0.0, 0
    try:
        start_step(session.wrapped, acc, group, ex)  # GRPO: the whole step's rollouts, before its micro-batches
        for k, mb in enumerate(group):
            batch = {key: t.to(acc.device) for key, t in collate(mb, ex, session.pad_id).items()}
            # only the last micro-batch all-reduces gradients across processes
            sync = nullcontext() if k == len(group) - 1 else acc.no_sync(session.wrapped)
            with sync:
                loss_sum, _ = session.wrapped(**batch)
                acc.backward(loss_sum / denom)  # normalise by the whole step's label tokens
            loss_total += loss_sum.item()
            tokens += sum(example_tokens(ex[i]) for i in mb.indices)  # real tokens, padding excluded
    except (torch.OutOfMemoryError, RuntimeError) as err:
        raise as_out_of_memory(err, session.cfg, session.state.step + 1) from None
    loss_total, tokens = dist.all_sum(acc, [loss_total, tokens])  # every process sees the same loss
    tokens = int(tokens)
    loss = loss_total / max(n_labels, 1)
    if not math.isfinite(loss):
        session.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(
            f"loss became {loss} at step {session.state.step + 1}; lower lr (now {session.cfg.lr:g}) "
            "or max_grad_norm, or use precision=fp32"
        )
    grad_norm = _clip(session)
    session.step_lr = session.scheduler.get_last_lr()[0]  # the lr this update uses
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, tokens


def _clip(session: Session) -> float:
    params = [p for p in session.model.parameters() if p.requires_grad]
    max_norm = session.cfg.max_grad_norm if session.cfg.max_grad_norm > 0 else float("inf")
    return float(sharding.full_tensor(session.accelerator.clip_grad_norm_(params, max_norm)))


def _label_count(example) -> int:
    # labels are shifted per example, so the first token's label never counts; a preference
    # example is one loss term (a pair or a KTO reply)
    return getattr(example, "loss_units", None) or sum(1 for t in example.labels[1:] if t != IGNORE)


def as_out_of_memory(err: Exception, cfg: TrainConfig, step: int) -> Exception:
    """An OutOfMemory naming the settings to lower for a device OOM; any other error unchanged."""
    if not isinstance(err, torch.OutOfMemoryError) and "out of memory" not in str(err).lower():
        return err
    hints = [f"micro_batch_size (now {cfg.micro_batch_size}; raise grad_accum to keep the batch)",
             f"data.cutoff_len (now {cfg.data.cutoff_len})"]
    if not cfg.gradient_checkpointing:
        hints.append("or set gradient_checkpointing=true")
    if cfg.method in ("full", "freeze", "lora"):
        hints.append("or use method=qlora" if cfg.method == "lora" else "or use method=lora")
    return OutOfMemory(f"out of memory at step {step}: lower " + ", ".join(hints))


def _log_step(session: Session, loss: float, grad_norm: float, tokens: int, seconds: float, total: int) -> dict:
    state, cfg = session.state, session.cfg
    row: dict[str, Any] = {
        "step": state.step, "loss": loss, "lr": session.step_lr, "tokens": tokens, "grad_norm": grad_norm,
        "tokens_per_s": tokens / max(seconds, 1e-9), "peak_mem_mb": peak_mem_mb(session.accelerator.device),
        "time": time.time(), **take_stats(session.wrapped, session.accelerator),  # preference rewards/accuracy
    }
    if session.eval_ex and ((cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == total):
        row["eval_loss"] = evaluate(session)
        row.update({f"eval_{k}": v for k, v in take_stats(session.wrapped, session.accelerator).items()})
    if session.accelerator.is_main_process and (state.step % cfg.log_every == 0 or "eval_loss" in row
                                                or state.step == total):
        session.metrics.write(row)
        session.run.update_status(step=state.step, last_loss=loss)
        session.run.log(f"step {state.step}/{total} loss {loss:.4f} lr {row['lr']:.2e} {row['tokens_per_s']:.0f} tok/s")
    session.last_row = row
    return row


@torch.no_grad()
def evaluate(session: Session) -> float:
    """Mean loss per label token over the eval examples (batched like training, no dropout)."""
    cfg, acc = session.cfg, session.accelerator
    lengths = [example_tokens(e) for e in session.eval_ex]
    plan = plan_epoch(lengths, cfg.micro_batch_size, cfg.data.cutoff_len, cfg.packing, cfg.seed, 0)
    # each process evaluates every N-th batch through the unwrapped module: the DDP wrapper's
    # forward syncs buffers, which would hang when processes run different numbers of batches
    model = acc.unwrap_model(session.wrapped)
    model.eval()
    total, count = 0.0, 0
    for mb, counts in sharding.eval_share(plan, acc, sharding.is_sharded(session.wrapped)):
        batch = {k: t.to(acc.device) for k, t in collate(mb, session.eval_ex, session.pad_id).items()}
        loss_sum, n = model(**batch)  # under FSDP a padding forward (counts=False) keeps processes in step
        total, count = total + counts * loss_sum.item(), count + counts * int(n)
    model.train()
    total, count = dist.all_sum(acc, [total, count])
    return total / max(count, 1)


def _maybe_save(session: Session, stopping: bool) -> bool:
    """Checkpoint every save_every steps and when stopping; True when the loop must stop."""
    cfg, state = session.cfg, session.state
    due = cfg.save_every > 0 and state.step % cfg.save_every == 0
    if (due or stopping) and (session.accelerator.is_main_process or sharding.is_sharded(session.wrapped)):
        path = ckpt.save_checkpoint(session.run.checkpoints, session.model, session.optimizer,
                                    session.scheduler, state, cfg.keep_last)
        if session.accelerator.is_main_process:
            session.run.log(f"saved {path.name}")
    session.accelerator.wait_for_everyone()
    return stopping


def _finish(session: Session, outcome: str, console) -> TrainResult:
    from tunelab.train.methods import save_result

    run, state = session.run, session.state
    row = session.last_row or (run.metrics() or [{}])[-1]
    final_loss, eval_loss = row.get("loss"), row.get("eval_loss")
    weights = sharding.gather_result(session.wrapped, session.cfg) if outcome == "finished" else None
    if session.accelerator.is_main_process:
        if outcome == "finished":
            model = session.accelerator.unwrap_model(session.wrapped).model
            result_path = save_result(model, session.cfg, run.path, session.tokenizer, session.template, weights)
        session.metrics.finish(result_path if outcome == "finished" else None)
        run.write_summary({"state": outcome, "steps": state.step, "final_loss": final_loss,
                           "eval_loss": eval_loss, "tokens": state.tokens, "seconds": round(state.elapsed, 2),
                           "tokens_per_s": state.tokens / max(state.elapsed, 1e-9),
                           "peak_mem_mb": row.get("peak_mem_mb")})
        run.update_status(state=outcome, step=state.step, final_loss=final_loss)
        run.log(f"{outcome} at step {state.step}")
        print_outcome(console, outcome, state.step, final_loss, run.path)
    session.accelerator.wait_for_everyone()  # every process returns once the run dir is complete
    return TrainResult(run.path, outcome, state.step, final_loss, eval_loss)
