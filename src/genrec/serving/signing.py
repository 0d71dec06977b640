"""Bundle signatures: HMAC-SHA256 (shared secret) or Ed25519 (key pair, via ``cryptography``).

The signature covers the exact bytes of ``manifest.json``, which lists the sha256 and size of
every file of the bundle, so it covers the whole bundle. It is stored next to the manifest in
``signature.json``: ``{"algorithm", "key_id", "signature"}`` (base64).

Key files:

- Ed25519: a PEM private key to sign, its PEM public key to verify (make them with
  ``openssl genpkey -algorithm ed25519 -out sign.pem`` and
  ``openssl pkey -in sign.pem -pubout -out verify.pem``).
- HMAC: any other file is a shared secret (its bytes, surrounding whitespace stripped; at
  least 32 bytes), used both to sign and to verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from genrec._io import atomic_write_text

__all__ = ["SIGNATURE_FILE", "BundleSigner", "SignatureError", "SignatureVerifier"]

SIGNATURE_FILE = "signature.json"

Algorithm = Literal["ed25519", "hmac-sha256"]


class SignatureError(ValueError):
    """A bundle's signature is missing, malformed or does not verify."""


def _read_key(path: str | Path) -> bytes:
    data = Path(path).read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: empty key file")
    return data


def _hmac_secret(data: bytes, path: str | Path) -> bytes:
    secret = data.strip()
    if len(secret) < 32:
        raise ValueError(f"{path}: an HMAC secret must have at least 32 bytes "
                         "(e.g. `openssl rand -hex 32 > secret`)")
    return secret


def _hmac_key_id(secret: bytes) -> str:
    # Not a hash of the secret itself: the id is public.
    return hmac.new(secret, b"genrec-bundle-key-id", hashlib.sha256).hexdigest()[:16]


def _ed_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class _Key:
    algorithm: Algorithm
    key_id: str
    _key: Any

    @classmethod
    def _hmac(cls, data: bytes, path: str | Path) -> Any:
        secret = _hmac_secret(data, path)
        return cls("hmac-sha256", _hmac_key_id(secret), secret)


@dataclass(frozen=True)
class BundleSigner(_Key):
    """Signs manifests with an Ed25519 private key or an HMAC secret."""

    @classmethod
    def from_file(cls, path: str | Path) -> BundleSigner:
        """A PEM Ed25519 private key, or else an HMAC secret.

        Raises:
            ValueError: If the file is an unusable key.
        """
        data = _read_key(path)
        if b"-----BEGIN" in data:
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: not an unencrypted PEM private key: {e}") from e
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: only Ed25519 private keys are supported")
            return cls("ed25519", _ed_key_id(key.public_key()), key)
        return cls._hmac(data, path)

    def sign(self, manifest: bytes) -> dict[str, str]:
        """The ``signature.json`` content for these manifest bytes."""
        if self.algorithm == "ed25519":
            sig = self._key.sign(manifest)
        else:
            sig = hmac.new(self._key, manifest, hashlib.sha256).digest()
        return {"algorithm": self.algorithm, "key_id": self.key_id,
                "signature": base64.b64encode(sig).decode("ascii")}

    def sign_folder(self, folder: Path) -> Path:
        """Write ``folder/signature.json`` for ``folder/manifest.json``."""
        out = folder / SIGNATURE_FILE
        atomic_write_text(out, json.dumps(self.sign((folder / "manifest.json").read_bytes()),
                                          indent=2))
        return out


@dataclass(frozen=True)
class SignatureVerifier(_Key):
    """Checks manifests against an Ed25519 public key or an HMAC secret."""

    @classmethod
    def from_file(cls, path: str | Path) -> SignatureVerifier:
        """A PEM Ed25519 public key, or else an HMAC secret.

        Raises:
            ValueError: If the file is an unusable key.
        """
        data = _read_key(path)
        if b"-----BEGIN" in data:
            if b"PRIVATE KEY" in data:
                raise ValueError(f"{path}: a private key; verify with the PUBLIC key "
                                 "(`openssl pkey -in sign.pem -pubout -out verify.pem`)")
            try:
                key = serialization.load_pem_public_key(data)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: not a PEM public key: {e}") from e
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{path}: only Ed25519 public keys are supported")
            return cls("ed25519", _ed_key_id(key), key)
        return cls._hmac(data, path)

    def verify(self, manifest: bytes, signature: bytes | None) -> None:
        """Check ``signature`` (the bytes of ``signature.json``) over ``manifest``.

        Raises:
            SignatureError: If the signature is missing, malformed, made with another key or
                does not match the manifest.
        """
        if signature is None:
            raise SignatureError(f"unsigned bundle ({SIGNATURE_FILE} is missing) and "
                                 "signatures are required")
        try:
            doc = json.loads(signature)
            alg, kid = doc["algorithm"], doc["key_id"]
            sig = base64.b64decode(doc["signature"], validate=True)
        except (ValueError, KeyError, TypeError) as e:
            raise SignatureError(f"{SIGNATURE_FILE} is malformed ({e})") from e
        if alg != self.algorithm or kid != self.key_id:
            raise SignatureError(f"signed with {alg} key {kid!r}, expected {self.algorithm} "
                                 f"key {self.key_id!r}")
        if self.algorithm == "ed25519":
            try:
                self._key.verify(sig, manifest)
                return
            except InvalidSignature:
                pass
        elif hmac.compare_digest(sig, hmac.new(self._key, manifest, hashlib.sha256).digest()):
            return
        raise SignatureError("bad signature: the manifest was altered or re-hashed after signing")
