"""PDF parchments: a printable, bilingual page for a badge or an award, with the signed credential inside.

The page carries what a reader of paper needs (names in English and Traditional Chinese, the recipient,
the facts of the achievement, a QR code with its URL printed beside it, the credential id) and the
signed credential itself as an embedded file (`credential.json`, plus `credential.jwt` when there is
one), so the same PDF uploaded to the verification page is verified from its attachment, not from
anything printed on it.

Text is set in Noto Sans TC (see scripts/fetch_fonts.py); fpdf2 embeds the subset of glyphs used. A
character the font lacks is never drawn as an empty box: it is left out and reported in `missing`.

Reading a PDF back (`attached_credential`) is for files from strangers: size, attachment count and the
inflated size of each attachment are bounded before anything is parsed as a credential.
"""

from __future__ import annotations

import io
import os
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF

FONT_FAMILY = "NotoSansTC"
FONT_FILES = {"": "NotoSansTC-Regular.ttf", "B": "NotoSansTC-Bold.ttf"}
ATTACHMENT_NAMES = ("credential.json", "credential.jwt")
MAX_PDF_BYTES = 10 * 1024 * 1024
MAX_ATTACHMENTS = 16
MAX_ATTACHMENT_BYTES = 2 * 1024 * 1024

# Colours of the page: ink, a muted grey that keeps 4.5:1 contrast on white, the border, a revoked red.
INK = (29, 39, 51)
MUTED = (84, 88, 95)
BORDER = (31, 78, 121)
RED = (164, 22, 26)


class ParchmentError(Exception):
    """A parchment cannot be made (the font is missing) or a PDF cannot be read; the message says why."""


@dataclass(frozen=True)
class Line:
    """One fact on the page: a bilingual label and its value."""

    label: str
    value: str


@dataclass(frozen=True)
class Parchment:
    """Everything printed on one parchment, already in words: labels come in both languages."""

    heading: str  # what kind of credential, e.g. "Open Badge | 數碼徽章"
    name_en: str
    name_zh: str | None
    issuer_name: str
    awarded_to_label: str
    recipient_name: str | None
    lines: list[Line]
    counted_label: str | None
    counted: list[str]
    qr_png: bytes
    qr_caption: str
    page_url: str
    id_label: str
    credential_id: str
    verify_note: str
    credential_json: str
    credential_jwt: str | None = None
    badge_png: bytes | None = None
    revoked_notice: str | None = None
    title: str = ""
    missing: set[str] = field(default_factory=set, compare=False)


def font_dir(configured: str | os.PathLike | None = None) -> Path:
    """Where the fonts are: the configured folder, or `fonts/` at the project root."""
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "fonts"


_COVERAGE: dict[Path, frozenset[int]] = {}
_COVERAGE_LOCK = threading.Lock()


def _coverage(path: Path) -> frozenset[int]:
    """The code points the font can draw, read once per process."""
    with _COVERAGE_LOCK:
        if path not in _COVERAGE:
            from fontTools.ttLib import TTFont

            _COVERAGE[path] = frozenset(TTFont(path, lazy=True).getBestCmap())
        return _COVERAGE[path]


def render(parchment: Parchment, fonts: Path) -> bytes:
    """The PDF bytes of one parchment (A4 landscape)."""
    paths = {style: fonts / name for style, name in FONT_FILES.items()}
    absent = [str(path) for path in paths.values() if not path.is_file()]
    if absent:
        raise ParchmentError(f"the PDF font is not installed ({', '.join(absent)}); run scripts/fetch_fonts.py")
    covered = _coverage(paths[""])

    def clean(text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        kept = []
        for ch in text:
            if ord(ch) in covered or ch in "\n\t":
                kept.append(ch)
            elif not unicodedata.category(ch).startswith(("M", "C")):
                parchment.missing.add(ch)
        return "".join(kept)

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(20, 18, 20)
    for style, path in paths.items():
        pdf.add_font(FONT_FAMILY, style, str(path))
    pdf.set_title(clean(parchment.title or parchment.name_en))
    pdf.set_author(clean(parchment.issuer_name))
    pdf.set_subject(parchment.credential_id)
    pdf.set_creator("Open Badges 3.0 issuer")
    pdf.set_lang("en")
    pdf.add_page()
    width, height = pdf.w, pdf.h

    pdf.set_draw_color(*BORDER)
    pdf.set_line_width(1.2)
    pdf.rect(8, 8, width - 16, height - 16)
    pdf.set_line_width(0.3)
    pdf.rect(11, 11, width - 22, height - 22)

    text_width = width - 40 - 72  # the right-hand column holds the badge and the QR code
    pdf.set_text_color(*MUTED)
    pdf.set_font(FONT_FAMILY, "", 11)
    pdf.set_xy(20, 20)
    pdf.multi_cell(text_width, 6, clean(parchment.issuer_name), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT_FAMILY, "", 10)
    pdf.multi_cell(text_width, 5, clean(parchment.heading), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    pdf.set_text_color(*INK)
    pdf.set_font(FONT_FAMILY, "B", 22)
    pdf.multi_cell(text_width, 10, clean(parchment.name_en), align="L", new_x="LMARGIN", new_y="NEXT")
    if parchment.name_zh:
        pdf.set_font(FONT_FAMILY, "B", 18)
        pdf.multi_cell(text_width, 9, clean(parchment.name_zh), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    if parchment.recipient_name:
        pdf.set_font(FONT_FAMILY, "", 10)
        pdf.set_text_color(*MUTED)
        pdf.multi_cell(text_width, 5, clean(parchment.awarded_to_label), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*INK)
        pdf.set_font(FONT_FAMILY, "B", 16)
        pdf.multi_cell(text_width, 8, clean(parchment.recipient_name), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)

    pdf.set_font(FONT_FAMILY, "", 10.5)
    label_width = max([pdf.get_string_width(clean(line.label)) for line in parchment.lines] + [40]) + 4
    for line in parchment.lines:
        pdf.set_text_color(*MUTED)
        pdf.cell(label_width, 6, clean(line.label))
        pdf.set_text_color(*INK)
        pdf.multi_cell(text_width - label_width, 6, clean(line.value), align="L", new_x="LMARGIN", new_y="NEXT")

    if parchment.counted:
        pdf.ln(2)
        pdf.set_text_color(*MUTED)
        pdf.multi_cell(text_width, 6, clean(parchment.counted_label or ""), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*INK)
        pdf.set_font(FONT_FAMILY, "", 9)
        shown = parchment.counted[:12]  # the page holds a dozen; the attachment lists them all
        for name in shown:
            pdf.multi_cell(text_width, 4.6, "• " + clean(name), align="L", new_x="LMARGIN", new_y="NEXT")
        if len(parchment.counted) > len(shown):
            pdf.multi_cell(text_width, 4.6, f"… (+{len(parchment.counted) - len(shown)})",
                           new_x="LMARGIN", new_y="NEXT")

    right = width - 20 - 64
    if parchment.badge_png:
        pdf.image(io.BytesIO(parchment.badge_png), x=right + 7, y=22, w=50, h=50, alt_text=clean(parchment.name_en))
    pdf.image(io.BytesIO(parchment.qr_png), x=right + 7, y=84, w=50, h=50, alt_text=clean(parchment.qr_caption))
    pdf.set_xy(right, 136)
    pdf.set_font(FONT_FAMILY, "", 8)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(64, 4, clean(parchment.qr_caption), align="C", new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(*INK)
    pdf.multi_cell(64, 4, parchment.page_url, align="C", link=parchment.page_url)

    if parchment.revoked_notice:
        pdf.set_xy(20, height - 52)
        pdf.set_font(FONT_FAMILY, "B", 13)
        pdf.set_text_color(*RED)
        pdf.multi_cell(text_width, 7, clean(parchment.revoked_notice), align="L", new_x="LMARGIN", new_y="NEXT")

    pdf.set_xy(20, height - 36)
    pdf.set_font(FONT_FAMILY, "", 8.5)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(width - 40, 4.5, f"{clean(parchment.id_label)}: {parchment.credential_id}",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(width - 40, 4.5, clean(parchment.verify_note), align="L", new_x="LMARGIN", new_y="NEXT")

    pdf.embed_file(bytes=parchment.credential_json.encode("utf-8"), basename=ATTACHMENT_NAMES[0],
                   desc="Open Badges 3.0 credential, JSON-LD with a Data Integrity proof")
    if parchment.credential_jwt:
        pdf.embed_file(bytes=parchment.credential_jwt.encode("ascii"), basename=ATTACHMENT_NAMES[1],
                       desc="The same credential as a VC-JWT")
    return bytes(pdf.output())


# --- reading the credential back out of a PDF ------------------------------------------------------


def attached_credential(raw: bytes) -> str:
    """The credential text a PDF carries as an attachment: `credential.json` first, then the JWT.

    Any PDF from anyone: the file size, the number of attachments and the inflated size of the one read
    are all bounded, and any failure of the PDF parser becomes a ParchmentError with a plain message.
    """
    if len(raw) > MAX_PDF_BYTES:
        raise ParchmentError(f"the PDF is too large ({len(raw)} bytes; the limit is {MAX_PDF_BYTES})")
    import pypdf
    from pypdf.errors import LimitReachedError

    # pypdf's own ceilings, lowered: nothing we inflate may be larger than a credential.
    limits = {"zlib_maximum_output_length": MAX_ATTACHMENT_BYTES,
              "lzw_maximum_output_length": MAX_ATTACHMENT_BYTES,
              "run_length_maximum_output_length": MAX_ATTACHMENT_BYTES,
              "brotli_maximum_output_length": MAX_ATTACHMENT_BYTES,
              "array_based_stream_maximum_output_length": MAX_ATTACHMENT_BYTES}
    try:
        with pypdf.apply_configuration(**limits):
            return _read_attachment(pypdf.PdfReader(io.BytesIO(raw), strict=False))
    except ParchmentError:
        raise
    except LimitReachedError:
        raise ParchmentError(f"the attached credential is larger than {MAX_ATTACHMENT_BYTES} bytes") from None
    except Exception as exc:  # noqa: BLE001 (pypdf raises many kinds of error on broken files)
        raise ParchmentError(f"the PDF cannot be read ({type(exc).__name__})") from None


def _read_attachment(reader) -> str:
    """The chosen attachment's text: `credential.json`, else `credential.jwt`, else the only .json/.jwt."""
    if reader.is_encrypted:
        raise ParchmentError("the PDF is encrypted; a parchment's attachment must be readable")
    files = {}
    for count, attachment in enumerate(reader.attachment_list, start=1):
        if count > MAX_ATTACHMENTS:
            raise ParchmentError(f"the PDF has more than {MAX_ATTACHMENTS} attachments")
        files.setdefault(attachment.name, attachment)
    chosen = next((files[name] for name in ATTACHMENT_NAMES if name in files), None)
    if chosen is None:
        credentials = [f for name, f in files.items() if str(name).lower().endswith((".json", ".jwt"))]
        if len(credentials) > 1:
            raise ParchmentError("the PDF has more than one attached file that could be a credential")
        chosen = credentials[0] if credentials else None
    if chosen is None:
        raise ParchmentError("the PDF has no attached credential (credential.json or credential.jwt)")
    content = chosen.content
    if len(content) > MAX_ATTACHMENT_BYTES:
        raise ParchmentError(f"the attached credential is larger than {MAX_ATTACHMENT_BYTES} bytes")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise ParchmentError("the attached credential is not UTF-8 text") from None
