"""Read training data in every common format into one list of `Row`s.

Public API:
- `read_datasets(paths, format=None, skip_invalid=False) -> LoadedData`:
  `.rows: list[Row]` (Row: `.messages` | `.text`, `.source`, `.line`, `.format`),
  `.rejected` (reason -> [(source, line)]), `.counts` (format -> rows) and `.ignored`
  (column -> rows it was dropped from; `ignore_columns` names the columns to drop).
- Formats: alpaca, sharegpt, messages (OpenAI), prompt_completion, text, preference (TRL
  prompt/chosen/rejected); detected per file from its first row, or forced with `format`.
  A row with `chosen` and `rejected` is a preference pair in any conversation format
  (data/pairs.py); a `label` column marks KTO rows.
- Images: OpenAI `image_url` content parts and LLaMA-Factory's `images` column (with `<image>`
  markers) land in `Row.images`, checked and resolved (vision/images.py).
- Paths: .jsonl, .json (array), .csv/.tsv, .parquet, directories of them, and
  LLaMA-Factory `dataset_info.json` (all its datasets, or `dataset_info.json#a,b`).
An invalid row raises DataError naming file, line and field, unless skip_invalid,
which counts it under `rejected` instead. No row is ever dropped uncounted, and no column:
one its format does not read is an error (data/columns.py) unless named in `ignore_columns`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Collection, Iterator

from tunelab.data.columns import drop_ignored, misspelt
from tunelab.data.errors import DataError
from tunelab.data.files import SUFFIXES, iter_records, list_files
from tunelab.data.pairs import is_pair_record
from tunelab.data.rows import FORMATS, LoadedData, Row, Schema, detect_format, normalize_format

__all__ = ["FORMATS", "LoadedData", "Row", "read_datasets"]

_INFO = "dataset_info.json"


def read_datasets(paths: list[str | Path], format: str | None = None, skip_invalid: bool = False,
                  ignore_columns: Collection[str] = ()) -> LoadedData:
    """Read every path into rows; see the module docstring."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    forced = Schema.of(format) if format else None
    loaded = LoadedData()
    for file, schema in _sources(paths):
        _read_file(file, schema or forced, loaded, skip_invalid, frozenset(ignore_columns))
    if not loaded.rows and not loaded.rejected:
        raise DataError("empty file", "no rows found in " + ", ".join(map(str, paths)))
    return loaded


def join_dataset_names(paths: list[str]) -> list[str]:
    """`datasets=data/dataset_info.json#a,b` on a command line splits at the comma into
    `...#a` and `b`; a bare name that is no file, right after such an item, joins it again."""
    out: list[str] = []
    for spec in map(str, paths):
        bare = "#" not in spec and "/" not in spec and "\\" not in spec and not Path(spec).exists()
        if out and "#" in out[-1] and bare:
            out[-1] += "," + spec
        else:
            out.append(spec)
    return out


def _sources(paths: list[str | Path]) -> Iterator[tuple[Path, Schema | None]]:
    """(file, schema or None for auto) for each input path."""
    for spec in paths:
        text = str(spec)
        path, _, names = text.partition("#") if _INFO + "#" in text else (text, "", "")
        path = Path(path)
        if path.name == _INFO or (path.is_dir() and (path / _INFO).is_file()):
            info = path if path.name == _INFO else path / _INFO
            yield from _dataset_info(info, [n for n in names.split(",") if n])
        elif path.is_dir():
            yield from _directory(path, text)
        elif path.is_file():
            yield path, None
        else:
            raise DataError("missing file", "no such file or directory", text)


def _directory(path: Path, text: str) -> Iterator[tuple[Path, Schema | None]]:
    """Data files under a directory; a subfolder with dataset_info.json is read through it."""
    infos = sorted(p.parent for p in path.rglob(_INFO))
    files = [f for f in list_files(path) if not any(d in f.parents for d in infos)]
    if not files and not infos:
        raise DataError("empty file", f"no data files ({', '.join(SUFFIXES)}) in the directory", text)
    yield from ((f, None) for f in files)
    for info_dir in infos:
        yield from _dataset_info(info_dir / _INFO, [])


def _read_file(path: Path, schema: Schema | None, loaded: LoadedData, skip_invalid: bool,
               ignore: frozenset[str]) -> None:
    """Rows of one file; with no schema each row's format is detected from its keys."""
    rows, seen = 0, None
    for line, record in iter_records(path):
        try:
            if isinstance(record, DataError):
                raise record
            record = drop_ignored(record, ignore, loaded.ignored)
            row_schema = schema or _detect(record, seen, str(path), line)
            seen = seen or row_schema
            loaded.add(row_schema.to_row(record, str(path), line))
            rows += 1
        except DataError as err:
            if not skip_invalid:
                raise
            loaded.reject(err)
            rows += 1
    if rows == 0:
        _handle(DataError("empty file", "file has no rows", str(path)), loaded, skip_invalid)


def _handle(err: DataError, loaded: LoadedData, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise err
    loaded.reject(err)


def _detect(record: dict, seen: Schema | None, source: str, line: int) -> Schema:
    """The row's format; a row fitting none is read as the file's earlier rows to name what is missing."""
    fmt = detect_format(record)
    if fmt is None and seen is not None:
        return seen
    if fmt is None:
        raise DataError("unknown format", f"cannot tell the format from the keys {sorted(record)}; expected "
                        "instruction/output, conversations, messages, prompt/completion or text "
                        f"(or pass --format){_typo(record)}", source, line)
    ranking = is_pair_record(record)  # chosen + rejected replies: a preference pair
    if fmt == "sharegpt" and "conversations" not in record:  # sharegpt turns under a 'messages' key
        return Schema.of(fmt, {"messages": "messages"}, ranking=ranking)
    return Schema.of(fmt, ranking=ranking)


def _typo(record: dict) -> str:
    """'; is 'outptu' a misspelling of 'output'?' for a key close to a column that tells a format."""
    keys = ("instruction", "output", "conversations", "messages", "prompt", "completion", "text", "chosen", "rejected")
    return next((hint for k in keys if k not in record and (hint := misspelt(k, record))), "")


def _dataset_info(info: Path, names: list[str]) -> Iterator[tuple[Path, Schema]]:
    """LLaMA-Factory datasets: file_name, formatting, columns and tags of each named entry."""
    try:
        table = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError("unreadable file", f"cannot read dataset_info.json: {err}", str(info)) from None
    if not isinstance(table, dict):
        raise DataError("wrong type", "expected an object of named datasets", str(info))
    for name in names or list(table):
        if name not in table:
            raise DataError("missing dataset", f"no dataset named '{name}'; it has {', '.join(table)}", str(info))
        yield from _info_entry(info, name, table[name])


def _info_entry(info: Path, name: str, entry: dict) -> Iterator[tuple[Path, Schema]]:
    where = f"{info}#{name}"
    if not isinstance(entry, dict) or "file_name" not in entry:
        hub = isinstance(entry, dict) and any(k in entry for k in ("hf_hub_url", "ms_hub_url", "script_url"))
        why = "hub datasets are not read offline; download it and set file_name" if hub else "needs 'file_name'"
        raise DataError("unsupported dataset", why, where)
    fmt = entry.get("formatting", "alpaca")
    columns = _info_columns(fmt, entry.get("columns") or {}, where)
    target = info.parent / entry["file_name"]
    if not target.exists():
        raise DataError("missing file", f"file_name '{entry['file_name']}' does not exist", where)
    files = list_files(target) if target.is_dir() else [target]
    if normalize_format(fmt) == "alpaca" and set(columns) == {"prompt"} and not _has_output(files):
        fmt, columns = "text", {"text": columns["prompt"]}  # a pretraining entry ({prompt: text}): plain text
    schema = Schema.of(fmt, columns, entry.get("tags") or {}, ranking=bool(entry.get("ranking")))
    yield from ((f, schema) for f in files)


def _has_output(files: list[Path]) -> bool:
    """Whether the first record carries alpaca's default response column ('output')."""
    for _, record in iter_records(files[0]) if files else ():
        return isinstance(record, dict) and "output" in record
    return False


def _info_columns(fmt: str, columns: dict, where: str) -> dict[str, str]:
    """LLaMA-Factory column names -> ours (they match except sharegpt's 'messages'); columns we
    cannot train yet (videos, audios) are an error, never dropped."""
    known = {"prompt", "query", "response", "system", "history", "messages", "chosen", "rejected", "kto_tag",
             "tools", "images"}
    for key in columns:
        if key in _NOT_YET:
            raise DataError("unsupported dataset", f"column '{key}': {_NOT_YET[key]}", where)
        if key not in known:
            raise DataError("unsupported dataset", f"unknown column '{key}'; known: {', '.join(sorted(known))}",
                            where)
    if normalize_format(fmt) == "sharegpt" and "messages" not in columns:
        columns = {**columns, "messages": "conversations"}
    return dict(columns)


_NOT_YET = {
    "videos": "video data is not supported yet (images are)",
    "audios": "audio data needs an audio model; tunelab trains text and image models only",
}
