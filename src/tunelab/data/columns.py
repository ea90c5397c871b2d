"""Unknown columns: a row key no format reads is an error naming it, never dropped silently.

Each `Schema` declares the columns it reads (`Schema.known_columns`); any other key of a row,
or of a turn inside it, is a DataError naming file, line and column with the closest known
name. Columns the user names in `data.ignore_columns` are dropped on purpose, and counted.
A key whose value is null carries nothing, so it is treated as absent.
"""

from __future__ import annotations

import difflib
from typing import Collection

from tunelab.data.errors import DataError

_HOW = "set data.ignore_columns (--ignore-columns) to drop it on purpose, or remove it from the data"


def check_columns(record: dict, known: Collection[str], fmt: str, source: str, line: int, where: str = "") -> None:
    """Raise DataError for the first key of `record` (a `fmt` row, or its turn at `where`) not in `known`."""
    for key, value in record.items():
        if key not in known and value is not None:
            raise unknown_column(str(key), known, fmt, source, line, where)


def unknown_column(key: str, known: Collection[str], fmt: str, source: str, line: int, where: str = "") -> DataError:
    """The error for one unknown column (or turn key), with a did-you-mean and how to proceed."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    if where:  # a key inside a turn: ignore_columns names row columns only
        return DataError(f"unknown key '{key}' in a turn", f"unknown key; {fmt} turns have {_listed(known)}. "
                         f"{hint}Remove it from the turns", source, line, f"{where}.{key}")
    return DataError(f"unknown column '{key}'", f"unknown column; {fmt} rows read {_listed(known)}. "
                     f"{hint}To train without it, {_HOW}", source, line, key)


def misspelt(missing: str, keys: Collection[str]) -> str:
    """'; did you mean ...' naming the key that looks like a misspelling of the `missing` one, or ''."""
    close = difflib.get_close_matches(missing, [str(k) for k in keys], n=1, cutoff=0.6)
    return f"; is '{close[0]}' a misspelling of '{missing}'?" if close else ""


def drop_ignored(record: dict, ignore: Collection[str], seen: dict[str, int]) -> dict:
    """`record` without the columns named in `ignore`; `seen` counts the rows each was dropped from."""
    if not ignore or not any(k in record for k in ignore):
        return record
    for key in ignore:
        if key in record:
            seen[key] = seen.get(key, 0) + 1
    return {k: v for k, v in record.items() if k not in ignore}


def _listed(known: Collection[str]) -> str:
    return ", ".join(sorted(known))

