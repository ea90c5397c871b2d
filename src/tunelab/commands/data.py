"""`tunelab data check|preview|convert`: look at training data before training on it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-subcommands check, preview and convert."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = _action(sub, "check", "validate files and report rows, rejects, lengths and loss share")
    check.add_argument("files", nargs="+", metavar="FILE", help="data files, directories or dataset_info.json")
    _model_options(check)
    check.add_argument("--cutoff", type=int, default=1024, help="cutoff length in tokens (default 1024)")
    check.add_argument("--overflow", choices=("truncate", "drop"), default="truncate", help="rows over the cutoff: cut at a turn boundary, or drop (default: truncate)")
    check.add_argument("--reward-funcs", default="", metavar="F,G",
                       help="read the files as GRPO prompts for these reward functions (as grpo.reward_funcs: "
                            "format, accuracy, module:function, file.py:function); their parameters name the "
                            "columns a row may carry")
    preview = _action(sub, "preview", "print rendered examples with the trained part highlighted")
    preview.add_argument("files", nargs=1, metavar="FILE", help="a data file, directory or dataset_info.json")
    preview.add_argument("-n", type=int, default=3, help="number of rows to show (default 3)")
    _model_options(preview)
    preview.add_argument("--cutoff", type=int, default=1024, help="cutoff length in tokens (default 1024)")
    convert = _action(sub, "convert", "rewrite a dataset as messages, alpaca or sharegpt JSONL/JSON")
    convert.add_argument("input", metavar="IN", help="a data file in any format tunelab reads")
    convert.add_argument("output", metavar="OUT", help="output .jsonl (or .json for an array)")
    convert.add_argument("--to", required=True, choices=("messages", "alpaca", "sharegpt"), help="output format")
    _read_options(convert)


def _action(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A `tunelab data` action whose --help starts with what it does."""
    return sub.add_parser(name, help=text, description=text)


def _read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default=None, help="force the input format (default: detect)")
    parser.add_argument("--skip-invalid", action="store_true", help="count invalid rows instead of failing")
    parser.add_argument("--ignore-columns", default="", metavar="A,B",
                        help="row columns to drop on purpose (comma-separated); any other unread column is an error")


def _model_options(parser: argparse.ArgumentParser) -> None:
    _read_options(parser)
    parser.add_argument("--model", default=None, help="model whose tokenizer and template to use (default: built-in)")
    parser.add_argument("--template", default=None, help="built-in chat template: llama3|chatml|qwen3|gemma|mistral|default")
    parser.add_argument("--train-on", choices=("assistant", "all", "last"), default="assistant",
                        help="which replies carry loss: every assistant turn, all tokens, or only the last "
                             "reply (default: assistant)")
    parser.add_argument("--system", default=None, help="default system prompt for rows without one")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit code."""
    return {"check": _check, "preview": _preview, "convert": _convert}[args.data_command](args)


def _config(args: argparse.Namespace):
    from tunelab.config import build
    from tunelab.data.config import DataConfig

    return build(DataConfig, {"format": args.format, "cutoff_len": args.cutoff, "train_on": args.train_on,
                              "overflow": getattr(args, "overflow", "truncate"), "skip_invalid": args.skip_invalid,
                              "template": args.template, "system": args.system,
                              "ignore_columns": _columns(args)})


def _columns(args: argparse.Namespace) -> list[str]:
    """--ignore-columns a,b as a list."""
    return [c.strip() for c in args.ignore_columns.split(",") if c.strip()]


def _tokenizer_and_template(args: argparse.Namespace):
    from transformers import AutoTokenizer

    from tunelab.data.templates import resolve_template
    from tunelab.store.resolve import resolve_model

    try:
        model_dir = resolve_model(args.model)
    except ImportError:  # the embedded default model ships separately; say so instead of a traceback
        from tunelab.errors import ModelNotFound

        raise ModelNotFound("the built-in default model is not available here; pass --model") from None
    template = resolve_template(model_dir, None, args.template, args.system)
    return AutoTokenizer.from_pretrained(model_dir), template


def _check(args: argparse.Namespace) -> int:
    from tunelab.data.check import check_data, format_report
    from tunelab.progress import progress

    cfg = _config(args)
    with progress("loading the model's tokenizer and chat template"):
        tokenizer, template = _tokenizer_and_template(args)
    if args.reward_funcs:
        return _check_prompts(args, cfg, tokenizer, template)
    report = check_data(args.files, template, tokenizer, cfg)
    print(format_report(report))
    if report.invalid and not args.skip_invalid:
        print(f"error: {report.invalid} invalid rows; fix them or pass --skip-invalid to train without them")
        return 1
    if report.loss_tokens == 0:
        print("error: no trainable tokens (see the counts above)")
        return 1
    return 0


def _check_prompts(args: argparse.Namespace, cfg, tokenizer, template) -> int:
    """`data check --reward-funcs`: GRPO prompt rows, their columns checked against the functions' parameters."""
    from tunelab.data.check import check_prompts
    from tunelab.train.reward_funcs import load_reward_funcs, reward_inputs

    funcs = load_reward_funcs([f.strip() for f in args.reward_funcs.split(",") if f.strip()])
    lines, rejected = check_prompts(args.files, template, tokenizer, cfg, reward_inputs(funcs),
                                    {f.name: f.required for f in funcs})
    print("\n".join(lines))
    if rejected and not args.skip_invalid:
        print(f"error: {rejected} invalid rows; fix them or pass --skip-invalid to train without them")
        return 1
    return 0


def _preview(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tunelab.data.formats import read_datasets
    from tunelab.data.preview import preview_row

    cfg = _config(args)
    loaded = read_datasets(args.files, cfg.format, skip_invalid=args.skip_invalid, ignore_columns=cfg.ignore_columns)
    tokenizer, template = _tokenizer_and_template(args)
    console = Console(highlight=False)
    console.print(f"chat template: {template.name}; trained tokens in bold green")
    for row in loaded.rows[: max(args.n, 0)]:
        console.print(preview_row(row, template, tokenizer, cfg))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tunelab.data.convert import convert_row, write_records
    from tunelab.data.formats import read_datasets

    loaded = read_datasets([args.input], args.format, skip_invalid=args.skip_invalid, ignore_columns=_columns(args))
    records = [convert_row(row, args.to) for row in loaded.rows]
    path = write_records(args.output, records)
    skipped = f"; {loaded.rejected_count} invalid rows skipped" if loaded.rejected_count else ""
    print(f"wrote {len(records)} rows as {args.to} to {path}{skipped}")
    return 0
