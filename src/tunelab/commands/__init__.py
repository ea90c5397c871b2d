"""CLI handlers: parse, build the config, call the library, print. Heavy imports stay inside `run`."""
