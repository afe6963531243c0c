"""Install the Traditional Chinese font the PDF parchments embed: Noto Sans TC (SIL Open Font License).

No PyPI package carries a Traditional Chinese font, so this takes Fontsource's npm package of Noto Sans TC
from the npm registry (a pinned version, checked against the registry's sha512 integrity), and joins its
per-unicode-range WOFF slices of one weight back into a single TrueType file with fontTools. The result
covers every character of Google Fonts' Noto Sans TC slices (about 12,000, Latin included). fpdf2 embeds
only the glyphs a document uses, so a parchment stays small.

Run by `make serve` and `make test` (target `fonts`); does nothing when the fonts are already there.
Usage: python scripts/fetch_fonts.py [--dir fonts] [--tarball FILE]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "@fontsource/noto-sans-tc"
VERSION = "5.3.0"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/noto-sans-tc-{VERSION}.tgz"
INTEGRITY = "sha512-+0MguVH2vIxkVJLiaMHVKHk+yJZmZvMU9d8z88JdUx8C2CgMLOtm7WNloi3HYlvCNy7TpuvjIUvh5iiGp6INxQ=="
WEIGHTS = {"Regular": 400, "Bold": 700}
# Layout tables differ per slice and cannot be merged; Chinese and Latin text on a parchment need none.
DROPPED = ["GSUB", "GPOS", "GDEF", "vhea", "vmtx"]
ROOT = Path(__file__).resolve().parents[1]


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (a fixed https URL)
        return response.read()


def check_integrity(data: bytes) -> None:
    algorithm, expected = INTEGRITY.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        sys.exit(f"{PACKAGE}@{VERSION}: integrity mismatch (got {algorithm}-{actual})")


def merge_weight(archive: tarfile.TarFile, weight: int, work: Path) -> bytes:
    from fontTools.merge import Merger, Options
    from fontTools.ttLib import TTFont

    pattern = re.compile(rf"package/files/noto-sans-tc-[\w-]+-{weight}-normal\.woff$")
    slices = []
    for member in archive.getmembers():
        if member.isfile() and pattern.match(member.name):
            font = TTFont(io.BytesIO(archive.extractfile(member).read()))
            font.flavor = None
            for tag in DROPPED:
                if tag in font:
                    del font[tag]
            path = work / f"{Path(member.name).stem}.ttf"
            font.save(path)
            slices.append(path)
    if not slices:
        sys.exit(f"{PACKAGE}@{VERSION}: no WOFF slices of weight {weight}")
    merged = Merger(options=Options(drop_tables=DROPPED)).merge(sorted(slices))
    out = io.BytesIO()
    merged.save(out)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "fonts")
    parser.add_argument("--tarball", type=Path, help="a local copy of the npm tarball instead of downloading")
    args = parser.parse_args(argv)
    targets = {style: args.dir / f"NotoSansTC-{style}.ttf" for style in WEIGHTS}
    if all(path.is_file() for path in targets.values()):
        return 0
    print(f"fetching {PACKAGE}@{VERSION} (about 67 MB) for the PDF parchments' Chinese font", flush=True)
    data = args.tarball.read_bytes() if args.tarball else download(TARBALL)
    check_integrity(data)
    args.dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive, tempfile.TemporaryDirectory() as tmp:
        licence = archive.extractfile("package/LICENSE").read()
        for style, weight in WEIGHTS.items():
            font = merge_weight(archive, weight, Path(tmp))
            partial = targets[style].with_suffix(".part")
            partial.write_bytes(font)
            partial.replace(targets[style])  # never leave half a font where the service looks
    (args.dir / "OFL.txt").write_bytes(licence)
    print(f"fonts written to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
