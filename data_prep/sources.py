"""Read documents from raw inputs: jsonl(.gz/.zst), parquet, plain text, HF datasets, dirs and globs.

Every reader yields ``str`` documents in a fixed order (files sorted by path) and counts what it
had to repair or skip in a :class:`ReadStats`: undecodable bytes are replaced (U+FFFD) and counted,
empty files are skipped and counted. Problems the user must fix raise DataError naming the file:
a corrupt or truncated archive (.gz/.zst), a damaged parquet file, a CSV or dataset file that is not
UTF-8 (e.g. cp1252 from a spreadsheet) are one message each, not a traceback from the reader library.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmtrain.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text", ".cor", ".tex", ".html", ".c", ".h", ".js")
FORMAT_SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson"),
    "parquet": (".parquet",),
    "txt": TEXT_SUFFIXES + tuple(s + ".gz" for s in TEXT_SUFFIXES) + tuple(s + ".zst" for s in TEXT_SUFFIXES),
    "hf_files": (".jsonl", ".json", ".parquet", ".csv", ".arrow"),
}
ACCEPTED = ("jsonl (.jsonl, .jsonl.gz, .jsonl.zst), parquet (.parquet), txt (.txt .md .rst .py ..., "
            "optionally .gz/.zst), hf_disk (a directory written by datasets' save_to_disk), "
            "hf_files (files datasets.load_dataset reads)")


@dataclass
class ReadStats:
    files: int = 0
    empty_files: int = 0
    documents: int = 0
    replaced_chars: int = 0
    docs_with_replacements: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    def merge(self, other: ReadStats) -> None:
        for k in ("files", "empty_files", "documents", "replaced_chars", "docs_with_replacements"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def is_hf_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()
                              or (path / "dataset_dict.json").is_file())


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if is_hf_disk(path):
        return "hf_disk"
    name = path.name.lower()
    for fmt in ("jsonl", "parquet", "txt"):
        if name.endswith(FORMAT_SUFFIXES[fmt]):
            return fmt
    raise DataError(f"{path}: unknown input format (by its name); accepted formats: {ACCEPTED}. "
                    f"Set `format:` on the source to read it anyway, e.g. format: txt")


def list_inputs(patterns: list[str], declared: str) -> list[Path]:
    """Expand files, directories (recursive) and globs into a sorted list of inputs."""
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat).expanduser()
        if any(c in pat for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError(f"the glob {pat} matches no file; check the pattern (** needs recursive dirs)")
            out += matches
        elif is_hf_disk(p) or (p.is_dir() and declared == "hf_disk"):
            out.append(p)
        elif p.is_dir():
            suffixes = FORMAT_SUFFIXES.get(declared, sum(FORMAT_SUFFIXES.values(), ()))
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes))
            if not files:
                raise DataError(f"directory {p} holds no input file of a known kind; accepted formats: {ACCEPTED}")
            out += files
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"input path {p} does not exist (resolved from the current directory "
                            f"{Path.cwd()}); fix `path:` in the data config")
    return out


def _open_bytes(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def _decode(raw: bytes, stats: ReadStats, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        n = text.count("\ufffd") - raw.count("\ufffd".encode())
        stats.replaced_chars += n
        stats.docs_with_replacements += 1
        stats.examples.setdefault("undecodable", where)
        return text


def _read_txt(path: Path, stats: ReadStats) -> Iterator[str]:
    with _open_bytes(path) as f:
        raw = f.read()
    if raw.strip():
        yield _decode(raw, stats, str(path))


def _read_jsonl(path: Path, text_field: str, stats: ReadStats) -> Iterator[str]:
    with _open_bytes(path) as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            line = _decode(raw, stats, f"{path}:{lineno}")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg}); fix or remove the line") from None
            if not isinstance(record, dict) or text_field not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{path} line {lineno}: no field {text_field!r} (found: {keys}); set "
                                f"`text_field:` of this source to the field that holds the text")
            value = record[text_field]
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(f"{path} line {lineno}: field {text_field!r} is {type(value).__name__}, not text")
            yield value


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                        f"set `text_field:` of this source")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value:
                yield value


def _read_hf(path: Path, fmt: str, text_field: str) -> Iterator[str]:
    import datasets

    if fmt == "hf_disk":
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    else:
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
        ext = "".join(path.suffixes[-1:]).lower()
        ds = datasets.load_dataset(kind.get(ext, "text"), data_files=str(path), split="train")
    if text_field not in ds.column_names:
        raise DataError(f"{path}: dataset has no column {text_field!r} (columns: {', '.join(ds.column_names)}); "
                        f"set `text_field:` of this source")
    for batch in ds.select_columns([text_field]).iter(batch_size=1024):
        for value in batch[text_field]:
            if value:
                yield value


def read_documents(path: Path, fmt: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    """Documents of one input, in file order; counts the file (and whether it was empty)."""
    fmt = detect_format(path, fmt)
    stats.files += 1
    if path.is_file() and path.stat().st_size == 0:
        stats.empty_files += 1
        stats.examples.setdefault("empty", str(path))
        return
    if fmt == "txt":
        it = _read_txt(path, stats)
    elif fmt == "jsonl":
        it = _read_jsonl(path, text_field, stats)
    elif fmt == "parquet":
        it = _read_parquet(path, text_field)
    elif fmt in ("hf_disk", "hf_files"):
        it = _read_hf(path, fmt, text_field)
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; accepted formats: {ACCEPTED}")
    n = 0
    try:
        for doc in it:
            n += 1
            stats.documents += 1
            yield doc
    except DataError:
        raise
    except _read_errors() as e:
        raise DataError(_unreadable(path, fmt, e, n)) from None
    if n == 0:
        stats.empty_files += 1
        stats.examples.setdefault("empty", str(path))


def _read_errors() -> tuple[type[BaseException], ...]:
    """What the readers raise for damaged or mis-encoded files (the libraries' own types when loaded)."""
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error, ValueError]
    if "pyarrow" in sys.modules:
        errors.append(sys.modules["pyarrow"].lib.ArrowException)
    if "datasets" in sys.modules:
        errors.append(sys.modules["datasets"].exceptions.DatasetsError)
    if "zstandard" in sys.modules:
        errors.append(sys.modules["zstandard"].ZstdError)
    return tuple(errors)


def _unreadable(path: Path, fmt: str, e: BaseException, docs: int) -> str:
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, UnicodeDecodeError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start: cause.start + 1].hex() if isinstance(cause.object, bytes) else "?"
        return (f"{path} is not UTF-8 text (byte 0x{byte} at position {cause.start}: {cause.reason}); it is probably "
                f"cp1252/latin-1 (e.g. saved by a spreadsheet): convert it with `iconv -f cp1252 -t utf-8 {path} > "
                f"{path.stem}.utf8{path.suffix}` and point the source at the converted file")
    kind = "compressed" if path.name.lower().endswith((".gz", ".zst")) else fmt
    detail = str(e).splitlines()[0][:300].rstrip(".") if str(e) else ""
    return (f"cannot read {path} as {kind} input after {docs} document(s): {type(e).__name__}: {detail}. The file "
            f"is damaged or truncated (or not {fmt}); re-create or re-download it, or remove it from the source")


def input_size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
