"""Golden security vectors (spec/vectors/security/): frames, attestations, certificates, trust and key files.

Made deterministically (Ed25519 signatures are deterministic) from the RFC 8032 section 7.1 test keys, fixed ids
and fixed timestamps (:mod:`accord.spec.security_fixtures`); the good frames are the story of
:mod:`accord.spec.story`, told between those keys, and every other vector changes one thing. The manifest's
sections are made and checked by :mod:`accord.spec.frame_vectors`, :mod:`accord.spec.attestation_vectors` and
:mod:`accord.spec.trust_vectors`; spec/PROTOCOL.md section 7.8 documents the layout.
``python -m accord.spec.security_vectors write spec`` writes them; :func:`check` verifies the committed files and
compares them with what :func:`generate` makes now (``accord spec check`` calls it).

The RFC 8032 secrets are public: these keys MUST NOT be trusted anywhere but in tests.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from accord.security.errors import SecurityError
from accord.security.trust import TrustStore
from accord.spec.attestation_vectors import attestation_vectors, verify_attestation_vector
from accord.spec.frame_vectors import frame_vectors, verify_frame_vector
from accord.spec.security_fixtures import GUARD_START_NS, RFC8032_SECRETS, Doc, keys, story, trust_store
from accord.spec.trust_vectors import (
    certificate_vectors,
    key_file_vectors,
    trust_file_vectors,
    verify_certificate_vector,
    verify_key_file_vector,
    verify_trust_file_vector,
)

__all__ = ["VECTORS_SUBDIR", "check", "generate", "verify", "write"]

VECTORS_SUBDIR: Final = Path("vectors") / "security"


def generate() -> dict[str, bytes]:
    """Every vector file, by name, as bytes."""
    test_keys = keys()
    told = story(test_keys)
    manifest: Doc = {
        "description": "Accord security vectors; see spec/PROTOCOL.md sections 7-10 (7.8: this layout). RFC 8032 "
        "test keys: never trust them outside tests.",
        "trust": "trust.json",
        "replay_guard": {"max_age_ms": 60_000, "max_skew_ms": 5_000, "start_ns": GUARD_START_NS},
        "keys": {
            name: {
                "rfc8032_secret_hex": RFC8032_SECRETS[name],
                "public_hex": ident.public_bytes.hex(),
                "id": ident.id,
                "seed": ident.seed,
            }
            for name, ident in test_keys.items()
        },
        "frames": frame_vectors(test_keys, told),
        "attestations": attestation_vectors(test_keys, told),
        "certificates": certificate_vectors(test_keys),
        "trust_files": trust_file_vectors(test_keys),
        "key_files": key_file_vectors(test_keys),
    }
    return {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
        "trust.json": trust_store(test_keys).to_json(),
        "attestation.dsse.json": told.result.attestation,
        "attestation.output.txt": told.result.output.encode("utf-8"),
    }


def write(spec_dir: str | Path) -> list[Path]:
    """Write the vectors under ``spec_dir/vectors/security``; returns the paths written."""
    out = Path(spec_dir) / VECTORS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in generate().items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written


def _section(manifest: Doc, name: str) -> list[Doc]:
    vectors = manifest.get(name, [])
    assert isinstance(vectors, list)
    return vectors


def _verify_all(manifest: Doc, directory: Path, trust: TrustStore) -> list[tuple[str, str | None]]:
    keys_doc = manifest["keys"]
    assert isinstance(keys_doc, dict)
    anchor = keys_doc["operator"]["id"]
    checks: dict[str, Callable[[Doc], str | None]] = {
        "frames": lambda v: verify_frame_vector(v, trust, manifest),
        "attestations": lambda v: verify_attestation_vector(v, directory, trust),
        "certificates": lambda v: verify_certificate_vector(v, anchor),
        "trust_files": verify_trust_file_vector,
    }
    results = [(f"{name}/{v['name']}", run(v)) for name, run in checks.items() for v in _section(manifest, name)]
    with tempfile.TemporaryDirectory() as scratch:
        for vector in _section(manifest, "key_files"):
            results.append((f"key_files/{vector['name']}", verify_key_file_vector(vector, Path(scratch))))
    return results


def verify(spec_dir: str | Path) -> list[tuple[str, str | None]]:
    """``(item, problem or None)`` for every vector of the manifest and every file the generator makes.

    Every vector must behave as the manifest says against the committed trust file, and every file must equal
    what :func:`generate` makes now (a difference means the wire changed: regenerate with
    ``python -m accord.spec.security_vectors write spec`` and review the diff).
    """
    directory = Path(spec_dir) / VECTORS_SUBDIR
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
        trust = TrustStore.load(directory / str(manifest["trust"]))
    except (OSError, ValueError, KeyError, SecurityError) as exc:
        return [("manifest.json", f"{directory}: cannot load the manifest or trust file: {exc}")]
    results = _verify_all(manifest, directory, trust)
    for name, data in generate().items():
        path = directory / name
        if not path.is_file():
            results.append((name, f"{path}: missing"))
        elif path.read_bytes() != data:
            problem = f"{path}: differs from the generator (python -m accord.spec.security_vectors write spec)"
            results.append((name, problem))
        else:
            results.append((name, None))
    return results


def check(spec_dir: str | Path) -> list[str]:
    """Problems with the committed security vectors (empty: all good); see :func:`verify`."""
    return [problem for _, problem in verify(spec_dir) if problem]


def main(argv: list[str] | None = None) -> int:
    """``python -m accord.spec.security_vectors (write|check) [SPEC_DIR]``."""
    args = sys.argv[1:] if argv is None else argv
    commands: dict[str, Callable[[str], int]] = {"write": _cmd_write, "check": _cmd_check}
    if not args or args[0] not in commands:
        print("usage: python -m accord.spec.security_vectors (write|check) [SPEC_DIR]", file=sys.stderr)
        return 2
    return commands[args[0]](args[1] if len(args) > 1 else "spec")


def _cmd_write(spec_dir: str) -> int:
    for path in write(spec_dir):
        print(path)
    return 0


def _cmd_check(spec_dir: str) -> int:
    problems = check(spec_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
