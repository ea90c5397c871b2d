"""Record readers for each file type: (line, record) pairs, or a DataError for a bad line.

Readers yield errors instead of raising so one bad line does not lose the rest of the
file: the caller counts it or stops, depending on skip_invalid. JSONL is streamed line
by line with a byte limit per line, so a 50 MB line costs bounded memory and time.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from tunelab.data.errors import DataError

MAX_LINE_BYTES = 16 * 2**20  # one row larger than this is surely a broken export, not a sample
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
# JSON-encoded cells in CSV/TSV files that hold lists (conversations, history)
_STRUCTURED = ("[", "{")

Record = tuple[int, "dict[str, Any] | DataError"]


def iter_records(path: Path) -> Iterator[Record]:
    """Records of one file, chosen by suffix; line numbers are 1-based (parquet: row numbers)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return iter_jsonl(path)
    if suffix == ".json":
        return iter_json(path)
    if suffix in (".csv", ".tsv"):
        return iter_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return iter_parquet(path)
    if suffix == ".txt":
        return iter_text(path)
    raise DataError("unsupported file", f"unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}", str(path))


def iter_jsonl(path: Path) -> Iterator[Record]:
    """One JSON object per line, streamed."""
    for lineno, raw in _lines(path):
        parsed = raw if isinstance(raw, DataError) else _parse_line(raw, str(path), lineno)
        if parsed is not None:
            yield lineno, parsed


def iter_text(path: Path) -> Iterator[Record]:
    """Plain text for continued pre-training: each non-blank line is a row, like LLaMA-Factory."""
    for lineno, raw in _lines(path):
        if isinstance(raw, DataError):
            yield lineno, raw
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            yield lineno, DataError("not UTF-8", f"bytes that are not UTF-8 at column {err.start + 1}", str(path), lineno)
            continue
        if text.strip():
            yield lineno, {"text": text}


def _lines(path: Path) -> Iterator[tuple[int, bytes | DataError]]:
    """Raw lines with 1-based numbers; a line over MAX_LINE_BYTES becomes an error, skipped in chunks."""
    with open(path, "rb") as f:
        lineno = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest_of_line(f)
                yield lineno, DataError("line too long", f"line is longer than {MAX_LINE_BYTES >> 20} MiB", str(path), lineno)
                continue
            yield lineno, raw[3:] if lineno == 1 and raw.startswith(b"\xef\xbb\xbf") else raw


def _skip_rest_of_line(f) -> None:
    while chunk := f.readline(MAX_LINE_BYTES):
        if chunk.endswith(b"\n"):
            return


def _parse_line(raw: bytes, src: str, lineno: int) -> dict | DataError | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return DataError("not UTF-8", f"bytes that are not UTF-8 at column {err.start + 1}", src, lineno)
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return DataError("malformed JSON", f"malformed JSON at column {err.colno}: {err.msg}", src, lineno)
    return _as_object(obj, src, lineno)


def _as_object(obj: Any, src: str, lineno: int) -> dict | DataError:
    if isinstance(obj, dict):
        return obj
    return DataError("wrong type", f"expected a JSON object per row, got {_kind(obj)}", src, lineno)


def iter_json(path: Path) -> Iterator[Record]:
    """A JSON array of objects (a .json file holding JSON lines is read as JSONL)."""
    src = str(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        yield line, DataError("not UTF-8", "bytes that are not UTF-8", src, line)
        return
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] == "{":
        yield from iter_jsonl(path)
        return
    if text[start:start + 1] != "[":
        if text.strip():
            yield 1, DataError("wrong type", "expected a JSON array of rows", src, text[:start].count("\n") + 1)
        return
    yield from _array_items(text, start + 1, src)


def _array_items(text: str, pos: int, src: str) -> Iterator[Record]:
    """Decode array items one at a time to know each item's line number."""
    decoder, line, counted = json.JSONDecoder(), 1, 0
    while True:
        pos = _skip_ws(text, pos)
        if text.startswith("]", pos):
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            yield err.lineno, DataError("malformed JSON", f"malformed JSON at column {err.colno}: {err.msg}", src, err.lineno)
            return
        yield line, _as_object(obj, src, line)
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            bad = text.count("\n", 0, pos) + 1
            yield bad, DataError("malformed JSON", "expected ',' or ']' between rows", src, bad)
            return


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def iter_csv(path: Path, delimiter: str) -> Iterator[Record]:
    """CSV/TSV with a header row; cells that hold JSON lists are parsed."""
    src = str(path)
    # surrogateescape keeps bad bytes as markers so only the rows holding them are rejected
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 2
    try:
        for row in reader:
            yield start, _csv_row(row, src, start)
            start = reader.line_num + 1
    except csv.Error as err:
        yield reader.line_num, DataError("malformed CSV", str(err), src, reader.line_num)


def _csv_row(row: dict, src: str, lineno: int) -> dict | DataError:
    if None in row:
        return DataError("malformed CSV", "more cells than header columns", src, lineno)
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            return DataError("missing field", "fewer cells than header columns", src, lineno, key)
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            return DataError("not UTF-8", "bytes that are not UTF-8", src, lineno, key)
        out[key] = _cell(value, src, lineno, key)
        if isinstance(out[key], DataError):
            return out[key]
    return out


def _cell(value: str, src: str, lineno: int, key: str) -> Any:
    if not value.lstrip().startswith(_STRUCTURED):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        if key in ("history", "conversations", "messages"):
            return DataError("malformed JSON", "cell is not valid JSON", src, lineno, key)
        return value


def iter_parquet(path: Path) -> Iterator[Record]:
    """Parquet rows in batches; 'line' is the 1-based row number."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from tunelab.errors import MissingExtra

        raise MissingExtra("pyarrow", "parquet", "reading .parquet files") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own error types for corrupt files
        raise DataError("unreadable file", f"not a readable parquet file: {err}", str(path)) from None
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _kind(obj: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number"
    )


def list_files(directory: Path) -> list[Path]:
    """Data files under a directory, recursively, in a stable order."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                  and p.name != "dataset_info.json" and not p.name.startswith("."))
