"""What ``llmtrain prepare`` may write and delete: its own outputs, never its inputs.

Two guards. :func:`check_overlap` refuses an ``output_dir`` that overlaps an input (a source inside
the output directory, or the output directory inside a source): prepare would read its own shards
back as text, and ``--overwrite`` could delete user files. :class:`OutputLedger` records every file
prepare creates *before* creating it (``.llmtrain-outputs/<writer>.txt`` in the output directory,
one relative path a line, one file per writer so nodes of a split run never append to the same
file); ``--overwrite`` deletes only recorded files, and prepare refuses to write over a file it
did not record. Output directories from before the ledger existed are covered by what their
manifest and part records list.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from llmtrain.config.data import DataConfig
from llmtrain.data.shards import MANIFEST
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError

log = get_logger(__name__)

LEDGER_DIR = ".llmtrain-outputs"


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _glob_base(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard."""
    fixed: list[str] = []
    for part in Path(pattern).expanduser().parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def check_overlap(cfg: DataConfig, inputs: dict[str, list[Path]], config_path: str, *, tokenizer_written: bool) -> None:
    """Refuse an output_dir (or a tokenizer prepare is about to train) that overlaps an input path.

    ``inputs`` maps each source to its resolved input files; the source's declared paths count too
    (an input directory, or the fixed part of a recursive glob, that contains the output directory).
    """
    out = cfg.output_path.resolve()
    tok = Path(cfg.tokenizer.path).resolve() if cfg.tokenizer is not None and tokenizer_written else None
    for source in cfg.sources:
        declared: list[Path] = []
        for pat in source.paths:
            if glob.has_magic(pat):
                if "**" in pat:
                    declared.append(_glob_base(pat).resolve())
            else:
                declared.append(Path(pat).expanduser().resolve())
        for p in declared + [f.resolve() for f in inputs.get(source.name, [])]:
            for what, target in (("output_dir", out), ("tokenizer.path", tok)):
                if target is None or (what == "tokenizer.path" and _inside(target, out)):
                    continue  # a tokenizer inside output_dir is checked through output_dir
                if _inside(p, target) or _inside(target, p):
                    rel = "is inside" if _inside(p, target) and p != target else "contains" if p != target else "is"
                    raise DataError(
                        f"source {source.name}: input {p} {rel} {what} {target}; prepare never writes into "
                        f"or deletes its inputs. Pick an {what} outside every source path in {config_path} "
                        f"(e.g. a sibling directory)")


class OutputLedger:
    """The files prepare wrote into one output directory (see the module docstring)."""

    def __init__(self, out: Path, writer: str = "node-0") -> None:
        self.out = Path(out)
        self.path = self.out / LEDGER_DIR / f"{writer}.txt"
        self._known: set[str] | None = None

    def recorded(self) -> set[str]:
        """Every relative path any writer recorded, plus what manifest and part records list."""
        if self._known is None:
            self._known = recorded_outputs(self.out)
        return self._known

    def claim(self, rel: str) -> Path:
        """Record ``rel`` as ours before it is written; refuse to write over a file we did not make."""
        path = self.out / rel
        known = self.recorded()
        if rel not in known:
            if path.exists() or path.is_symlink():
                raise DataError(f"{path} exists but was not written by llmtrain prepare; it is never overwritten. "
                                f"Move it away or pick another output_dir")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(rel + "\n")
                f.flush()
            known.add(rel)
        return path

    def claim_shard(self, rel: str) -> Path:
        self.claim(rel[: -len(".bin")] + ".idx")
        return self.claim(rel)


def recorded_outputs(out: Path) -> set[str]:
    found: set[str] = set()
    ledger = out / LEDGER_DIR
    if ledger.is_dir():
        for f in sorted(ledger.glob("*.txt")):
            found.update(line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    # directories prepared before the ledger: what their manifest and part records name
    manifest = out / MANIFEST
    if manifest.is_file():
        found.add(MANIFEST)
        try:
            for s in json.loads(manifest.read_text()).get("shards", []):
                found.update({s["file"], s["file"][: -len(".bin")] + ".idx"})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            pass
    parts = out / "parts"
    if parts.is_dir():
        for rec in parts.glob("*/part-*.json"):
            rel = rec.relative_to(out).as_posix()
            found.update({rel, rel[: -len(".json")] + ".hashes.npz"})
            try:
                for s in json.loads(rec.read_text()).get("shards", []):
                    found.update({s["file"], s["file"][: -len(".bin")] + ".idx"})
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                pass
    return {r for r in found if _safe_relative(r)}


def _safe_relative(rel: str) -> bool:
    """A recorded path must stay inside the output directory (a doctored ledger deletes nothing else)."""
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def remove_outputs(out: Path) -> int:
    """``--overwrite``: delete every file prepare recorded in ``out`` (nothing else); returns how many."""
    out = Path(out)
    if not out.is_dir():
        return 0
    removed, dirs = 0, set()
    for rel in sorted(recorded_outputs(out)):
        path = out / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
        dirs.update(p for p in path.parents if _inside(p, out) and p != out)
    ledger = out / LEDGER_DIR
    for f in ledger.glob("*.txt") if ledger.is_dir() else []:
        f.unlink()
    dirs.add(ledger)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):  # only directories left empty
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    log.info(f"[prepare] --overwrite: removed {removed} file(s) an earlier prepare wrote to {out}")
    return removed


def check_output_dir(out: Path, tok, overwrite: bool, config_path: str) -> None:
    """Refuse a directory prepared with another tokenizer, or with ``overwrite`` remove our files from it."""
    from data_prep.parts import PartRecord

    if overwrite:
        remove_outputs(out)
        return
    found: str | None = None
    if (out / MANIFEST).is_file():
        try:
            found = json.loads((out / MANIFEST).read_text()).get("tokenizer_fingerprint")
        except (json.JSONDecodeError, AttributeError):
            found = None
    else:
        rec = next(iter(sorted((out / "parts").glob("*/part-*.json"))), None) if (out / "parts").is_dir() else None
        found = PartRecord.load(rec).tokenizer_fingerprint if rec else None
    if found and found != tok.fingerprint:
        raise DataError(f"{out} was prepared with another tokenizer (fingerprint {found[:12]}, this one is "
                        f"{tok.fingerprint[:12]} from {tok.directory}); pick another output_dir or re-run "
                        f"`llmtrain prepare --config {config_path} --overwrite` to replace it")
