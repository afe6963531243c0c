"""PDF parchments: /credentials/<id>.pdf for badges and awards, bilingual with the Chinese glyphs embedded,
the QR code and the credential id printed, the signed credential attached; and PDFs read back on upload
(ours verify, hostile or broken ones are refused with a plain message)."""

from __future__ import annotations

import io
import json

import pypdf
import pytest
from fontTools.ttLib import TTFont

from issuer import parchment
from issuer.formats import FormatError, parse_submission
from tests.test_awards import AI_CERTIFICATE, LEARNER, auth, issue_badges, stored
from tests.test_downloads import upload

pytestmark = pytest.mark.skipif(
    not (parchment.font_dir() / "NotoSansTC-Regular.ttf").is_file(),
    reason="the PDF font is not installed: `make test` runs scripts/fetch_fonts.py first")


def issue_named(client, token, code="AI-101", name="陳大文 Chan Tai Man", email=LEARNER):
    response = client.post("/api/v1/credentials", headers=auth(token),
                           json={"achievement": code, "recipient": {"email": email, "name": name}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def embedded_fonts(pdf: bytes) -> list[TTFont]:
    """The font programs the PDF embeds (FontFile2 streams), opened with fontTools."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts = []
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            for descendant in font.get_object().get("/DescendantFonts", []):
                descriptor = descendant.get_object()["/FontDescriptor"].get_object()
                fonts.append(TTFont(io.BytesIO(descriptor["/FontFile2"].get_object().get_data())))
    return fonts


def test_a_badge_parchment_is_bilingual_with_every_glyph_embedded(client, issue_token):
    badge = issue_named(client, issue_token)
    response = client.get(f"/credentials/{badge['id']}.pdf")
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{badge["id"]}.pdf"'
    text = text_of(response.data)
    document = json.loads(client.get(f"/credentials/{badge['id']}.json").data)
    achievement = document["credentialSubject"]["achievement"]
    zh_name = next(r["name"] for r in achievement["related"] if r["inLanguage"] == "zh-Hant")
    for expected in [achievement["name"], zh_name, "陳大文 Chan Tai Man", "Awarded to", "獲頒者",
                     document["id"], badge["url"], f"{'http://127.0.0.1:5000'}/verify"]:
        assert expected in text.replace("\n", " ").replace("  ", " ") or expected in text, expected
    # No tofu: every character printed has a glyph in a font the PDF carries.
    fonts = embedded_fonts(response.data)
    assert fonts, "the PDF embeds no font"
    covered = set().union(*(set(f.getBestCmap()) for f in fonts))
    assert {ord(ch) for ch in zh_name + "陳大文獲頒者"} <= covered


def test_the_parchment_carries_the_stored_credential_and_verifies_when_uploaded(client, issue_token):
    badge = issue_named(client, issue_token)
    pdf = client.get(f"/credentials/{badge['id']}.pdf").data
    attachments = pypdf.PdfReader(io.BytesIO(pdf)).attachments
    assert attachments["credential.json"] == [client.get(f"/credentials/{badge['id']}.json").data]
    result = upload(client, pdf, "parchment.pdf", email=LEARNER)
    assert result["verified"] is True, result
    assert {c["name"]: c["ok"] for c in result["checks"]}["recipient"] is True
    page = client.post("/verify", data={"file": (io.BytesIO(pdf), "parchment.pdf")},
                       content_type="multipart/form-data")
    assert page.status_code == 200 and "Genuine: this badge verifies" in page.get_data(as_text=True)


def test_the_parchment_prints_the_qr_code_of_the_page_url(client, issue_token):
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    badge = issue_named(client, issue_token)
    reader = pypdf.PdfReader(io.BytesIO(client.get(f"/credentials/{badge['id']}.pdf").data))
    decoded = []
    for image in reader.pages[0].images:
        picture = Image.open(io.BytesIO(image.data)).convert("L")
        decoded += [r.text for r in zxingcpp.read_barcodes(picture.resize((picture.width * 4, picture.height * 4),
                                                                           Image.NEAREST))]
    assert badge["url"] in decoded


def test_a_tampered_attachment_fails_verification(client, issue_token):
    badge = issue_named(client, issue_token)
    stored_text = client.get(f"/credentials/{badge['id']}.json").data.decode()
    page = parchment.Parchment(
        heading="x", name_en="x", name_zh=None, issuer_name="x", awarded_to_label="x", recipient_name=None,
        lines=[], counted_label=None, counted=[], qr_png=client.get(f"/credentials/{badge['id']}/qr.png").data,
        qr_caption="x", page_url=badge["url"], id_label="x", credential_id=badge["url"], verify_note="x",
        credential_json=stored_text.replace("Artificial", "Artificia1", 1))
    pdf = parchment.render(page, parchment.font_dir())
    result = upload(client, pdf, "tampered.pdf")
    assert result["verified"] is False
    assert {c["name"]: c["ok"] for c in result["checks"]}["proof"] is False


def test_an_award_parchment_lists_its_counted_badges(client, issue_token):
    issued = issue_badges(client, issue_token, AI_CERTIFICATE)
    response = client.post("/api/v1/awards", json={"recipient": {"email": LEARNER},
                                                   "credentials": stored(client, issued)})
    assert response.status_code == 201, response.get_json()
    award = response.get_json()
    pdf = client.get(f"/credentials/{award['id']}.pdf")
    assert pdf.status_code == 200
    text = " ".join(text_of(pdf.data).split())
    assert "Certificate in Professional Practice (Artificial Intelligence)" in text
    assert "Counted badges" in text
    attachments = pypdf.PdfReader(io.BytesIO(pdf.data)).attachments
    assert json.loads(attachments["credential.json"][0])["id"] == award["url"]
    assert upload(client, pdf.data, "award.pdf", email=LEARNER)["verified"] is True


def test_a_revoked_badge_parchment_says_so(client, issue_token, make_token):
    badge = issue_named(client, issue_token)
    before = client.get(f"/credentials/{badge['id']}.pdf").data
    response = client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(make_token("revoke")),
                           json={"reason": "issued to the wrong learner", "category": "issued in error"})
    assert response.status_code == 200, response.get_json()
    after = client.get(f"/credentials/{badge['id']}.pdf").data
    assert "Revoked on" not in text_of(before)
    assert "Revoked on" in text_of(after) and "撤銷" in text_of(after)


def test_the_pdf_answers_503_with_a_reason_when_the_font_is_missing(app, client, issue_token, tmp_path):
    badge = issue_named(client, issue_token)
    app.config["ISSUER_FONT_DIR"] = str(tmp_path / "no-fonts")
    response = client.get(f"/credentials/{badge['id']}.pdf", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert "font" in response.get_json()["detail"]


def test_characters_the_font_lacks_are_left_out_not_drawn_as_boxes(client, issue_token):
    badge = issue_named(client, issue_token, name="Chan 🎓 Tai Man")
    pdf = client.get(f"/credentials/{badge['id']}.pdf").data
    text = text_of(pdf)
    assert "Chan  Tai Man" in text or "Chan Tai Man" in text
    covered = set().union(*(set(f.getBestCmap()) for f in embedded_fonts(pdf)))
    assert ord("🎓") not in covered


# --- reading PDFs from strangers -----------------------------------------------------------------------

def pdf_with(files: dict[str, bytes]) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.add_page()
    for name, data in files.items():
        document.embed_file(bytes=data, basename=name, compress=True)
    return bytes(document.output())


def test_a_pdf_without_a_credential_is_refused_plainly():
    with pytest.raises(FormatError, match="no attached credential"):
        parse_submission(pdf_with({}))
    with pytest.raises(FormatError, match="no attached credential"):
        parse_submission(pdf_with({"notes.txt": b"hello"}))


def test_a_pdf_with_two_candidate_credentials_is_refused():
    with pytest.raises(FormatError, match="more than one"):
        parse_submission(pdf_with({"a.json": b"{}", "b.json": b"{}"}))


def test_a_pdf_with_too_many_attachments_is_refused():
    with pytest.raises(FormatError, match="more than 16 attachments"):
        parse_submission(pdf_with({f"f{i}.txt": b"x" for i in range(20)}))


def test_a_compressed_bomb_attachment_is_refused_without_inflating_it():
    bomb = b"{" + b" " * (50 * 1024 * 1024) + b"}"
    raw = pdf_with({"credential.json": bomb})
    assert len(raw) < 1024 * 1024  # fpdf2 compresses it: the inflated size is what must be refused
    with pytest.raises(FormatError, match="larger than"):
        parse_submission(raw)


def test_broken_and_truncated_pdfs_are_refused_with_a_message(client):
    good = pdf_with({"credential.json": b'{"a": 1}'})
    for raw in [b"%PDF-1.7\n garbage", good[: len(good) // 2], good.replace(b"/EmbeddedFiles", b"/Embeddedxxxxx")]:
        with pytest.raises(FormatError, match="PDF"):
            parse_submission(raw)
        response = client.post("/api/v1/verify", data={"file": (io.BytesIO(raw), "x.pdf")},
                               content_type="multipart/form-data")
        assert 400 <= response.status_code < 500, response.data[:200]


def test_a_pdf_attachment_is_parsed_as_strictly_as_a_json_upload():
    with pytest.raises(FormatError, match="duplicate member name"):
        parse_submission(pdf_with({"credential.json": b'{"id": 1, "id": 2}'}))
    assert parse_submission(pdf_with({"credential.json": b'{"a": 1}'})).baked == "pdf"
