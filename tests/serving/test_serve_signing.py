"""Signed bundles (HMAC, Ed25519) and the smoke test every bundle passes before it goes live."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.numpy import load_file, save_file

from genrec.serving import BundleError, ModelPool, ServeSettings, create_app, export_run
from genrec.serving.signing import SIGNATURE_FILE, BundleSigner, SignatureVerifier
from genrec.serving.testing import ThreadServer

ADMIN = "admin-key-for-signing-tests"


def rehash(bundle: Path) -> None:
    """What an attacker with write access does: make the manifest's checksums match again."""
    mpath = bundle / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for rel in manifest["files"]:
        data = (bundle / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    mpath.write_text(json.dumps(manifest, indent=2))


def set_weights(bundle: Path, fn) -> None:
    state = bundle / "model" / "state.safetensors"
    tensors = load_file(state)
    save_file({k: fn(v) for k, v in tensors.items()}, state)
    rehash(bundle)


@pytest.fixture
def hmac_key(tmp_path) -> Path:
    p = tmp_path / "secret"
    p.write_text("0123456789abcdef" * 4 + "\n")
    return p


def _server(models, tmp_path, **settings) -> ThreadServer:
    app = create_app(models, settings=ServeSettings(
        feedback_url=str(tmp_path / "fb.db"), rate_limit=0,
        api_keys=[{"id": "ops", "key": ADMIN, "scopes": ["admin", "recommend"]}], **settings))
    return ThreadServer(app)


def test_rehashed_bundle_is_refused_when_signatures_are_required(bundles, tmp_path,
                                                                 hmac_key) -> None:
    live = tmp_path / "ease"
    shutil.copytree(bundles.ease, live)
    BundleSigner.from_file(hmac_key).sign_folder(live)
    unsigned = tmp_path / "unsigned"
    shutil.copytree(bundles.pop, unsigned)
    with pytest.raises(BundleError, match="unsigned bundle"):
        ModelPool([(None, unsigned)], verifier=SignatureVerifier.from_file(hmac_key))

    with _server([f"m={live}"], tmp_path, verify_key=str(hmac_key)) as srv, \
            httpx.Client(base_url=srv.url, headers={"x-api-key": ADMIN}, timeout=30) as c:
        before = c.post("/recommend", json={"user": "196"}).json()["items"]
        assert c.post("/admin/reload", json={}).status_code == 200  # signed: accepted
        # Altered weights, checksums re-hashed, the old signature left in place.
        set_weights(live, lambda w: -w)
        r = c.post("/admin/reload", json={})
        assert r.status_code == 409 and "bad signature" in r.json()["detail"]
        # Or the signature removed.
        (live / SIGNATURE_FILE).unlink()
        r = c.post("/admin/reload", json={})
        assert r.status_code == 409 and "unsigned bundle" in r.json()["detail"]
        assert c.post("/recommend", json={"user": "196"}).json()["items"] == before
        health = c.get("/health").json()
        assert health["status"] == "ok"  # the old model still serves ...
        assert "unsigned" in health["model_status"][0]["reload_error"]  # ... and why not new


def test_ed25519_export_and_wrong_key(bundles, tmp_path) -> None:
    priv = Ed25519PrivateKey.generate()
    sign = tmp_path / "sign.pem"
    sign.write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    verify = tmp_path / "verify.pem"
    pem, spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    verify.write_bytes(priv.public_key().public_bytes(pem, spki))
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(pem, spki))
    out = export_run(bundles.run, tmp_path / "signed", model="pop",
                     signer=BundleSigner.from_file(sign))
    assert json.loads((out / SIGNATURE_FILE).read_text())["algorithm"] == "ed25519"
    pool = ModelPool([(None, out)], verifier=SignatureVerifier.from_file(verify))
    assert pool.names == ["pop"]
    with pytest.raises(BundleError, match="expected ed25519 key"):
        ModelPool([(None, out)], verifier=SignatureVerifier.from_file(other))
    with pytest.raises(ValueError, match="PUBLIC key"):
        SignatureVerifier.from_file(sign)
    short = tmp_path / "short"
    short.write_text("too short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        BundleSigner.from_file(short)


@pytest.mark.parametrize("damage", ["wrong-shape", "nan"])
def test_a_bundle_failing_its_smoke_test_never_goes_live(bundles, tmp_path, damage) -> None:
    path = tmp_path / "m"
    shutil.copytree(bundles.ease, path)
    with _server([f"m={path}"], tmp_path) as srv, \
            httpx.Client(base_url=srv.url, headers={"x-api-key": ADMIN}, timeout=30) as c:
        before = c.post("/recommend", json={"user": "196"}).json()["items"]
        if damage == "wrong-shape":  # checksums consistent, weights do not fit the model
            set_weights(path, lambda w: np.ascontiguousarray(w[:100, :100]))
        else:
            set_weights(path, lambda w: np.full_like(w, np.nan))
        r = c.post("/admin/reload", json={})
        assert r.status_code == 409, r.text
        assert "smoke test" in r.json()["detail"] and "old model kept" in r.json()["detail"]
        r = c.post("/recommend", json={"user": "196"})
        assert r.status_code == 200 and r.json()["items"] == before
        status = c.get("/health").json()["model_status"][0]
        assert status["ready"] and "smoke test" in status["reload_error"]
    with pytest.raises(BundleError, match="smoke test"):  # nor at start
        ModelPool([(None, path)])
