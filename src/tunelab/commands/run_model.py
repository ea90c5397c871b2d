"""`tunelab run MODEL [PROMPT]`: Ollama's habit -- pull the model when needed, then chat with it.

MODEL is anything `tunelab pull` or the store takes (store name, Ollama NAME:TAG, hub id,
modelscope:ORG/NAME, a model dir, a .gguf file) or a training run. With PROMPT the reply is
printed and the command exits; without it this is `tunelab chat`.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`tunelab chat`'s flags, plus the optional one-shot PROMPT."""
    from tunelab.commands import chat

    chat.add_arguments(parser)
    parser.add_argument("prompt", nargs="?", default=None, help="one message: print the reply and exit")


def run(args: argparse.Namespace) -> int:
    """Pull when needed, then one reply (PROMPT) or an interactive chat."""
    from tunelab.commands.chat import open_chat, resolve_target
    from tunelab.rundir import find_run
    from tunelab.store.resolve import resolve_model

    model, adapter = resolve_target(args.model, args.adapter)
    if model is not None and find_run(str(args.model)) is None:
        print(f"looking up {model} (pulled into the store when it is not there yet) ...", file=sys.stderr)
        model = resolve_model(model)
    session = open_chat(args, model, adapter)
    if args.prompt is None:
        session.loop()
    else:
        session.reply(args.prompt)
    return 0
