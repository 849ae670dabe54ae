"""Text extraction for every supported format, on documents the formats' libraries wrote;
corrupt files and zip bombs are refused with a reason."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from dashserve.platform.extract import (
    ExtractionError,
    ZipLimits,
    check_zip,
    decode_text,
    extract_isolated,
    extract_text,
    format_of,
)
from tests.utils.documents import (
    docx_bytes,
    epub_bytes,
    pdf_bytes,
    pptx_bytes,
    write,
    xlsx_bytes,
    zip_bomb,
)


def test_formats_come_from_the_extension() -> None:
    assert format_of("Report.PDF") == "pdf" and format_of("a.b.docx") == "docx"
    assert format_of("page.htm") == "html" and format_of("notes.markdown") == "md"
    assert format_of("image.png") is None and format_of("README") is None


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "gb18030"])
def test_plain_text_in_common_encodings(tmp_path: Path, encoding: str) -> None:
    text = "长文档第一行\nsecond line: 42\n"
    path = write(tmp_path / "a.txt", text.encode(encoding))
    assert extract_text(path, "txt") == text


def test_binary_posing_as_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="not text"):
        extract_text(write(tmp_path / "a.txt", b"\x00\x01\x02binary\xff\xfe\x00"), "txt")


def test_markdown_and_csv_keep_their_text(tmp_path: Path) -> None:
    md = "# Title\n\n* item one\n"
    csv = "name,qty\napple,3\n"
    assert extract_text(write(tmp_path / "a.md", md), "md") == md
    assert extract_text(write(tmp_path / "a.csv", csv), "csv") == csv


def test_json_is_validated(tmp_path: Path) -> None:
    doc = json.dumps({"policy": "refunds within 30 days"}, ensure_ascii=False)
    assert extract_text(write(tmp_path / "a.json", doc), "json") == doc
    with pytest.raises(ExtractionError, match="not valid JSON"):
        extract_text(write(tmp_path / "b.json", '{"open": '), "json")
    lines = '{"a": 1}\n{"b": 2}\n'
    assert extract_text(write(tmp_path / "c.jsonl", lines), "jsonl") == lines
    with pytest.raises(ExtractionError, match="line 2"):
        extract_text(write(tmp_path / "d.jsonl", '{"a": 1}\nnope\n'), "jsonl")


def test_html_gives_visible_text_only(tmp_path: Path) -> None:
    page = ("<html><head><title>T</title><style>p{}</style></head><body><h1>Heading</h1>"
            "<script>var hidden = 1;</script><p>First <b>bold</b> paragraph.</p></body></html>")
    text = extract_text(write(tmp_path / "a.html", page), "html")
    assert "Heading" in text and "First" in text and "bold" in text
    assert "hidden" not in text and "p{}" not in text


def test_pdf(tmp_path: Path) -> None:
    path = write(tmp_path / "a.pdf", pdf_bytes(["Quarterly revenue grew 12 percent.",
                                                "Churn fell to 3 percent."]))
    text = extract_text(path, "pdf")
    assert "Quarterly revenue grew 12 percent." in text and "Churn fell to 3 percent." in text


def test_corrupt_and_fake_pdfs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="not a PDF"):
        extract_text(write(tmp_path / "a.pdf", b"hello, I am text"), "pdf")
    broken = pdf_bytes(["x"])[:60] + b"\x00garbage" * 10
    with pytest.raises(ExtractionError):
        extract_text(write(tmp_path / "b.pdf", broken), "pdf")


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    data = docx_bytes(["The lease ends in March.", "Rent is due monthly."],
                      table=[["item", "price"], ["desk", "120"]])
    text = extract_text(write(tmp_path / "a.docx", data), "docx")
    assert "The lease ends in March." in text and "Rent is due monthly." in text
    assert "desk\t120" in text


def test_xlsx_sheets_and_cells(tmp_path: Path) -> None:
    data = xlsx_bytes({"Sales": [["region", "total"], ["north", 1200], ["south", 950.5]],
                       "Notes": [["checked by audit"]]})
    text = extract_text(write(tmp_path / "a.xlsx", data), "xlsx")
    assert "# Sales" in text and "north\t1200" in text and "south\t950.5" in text
    assert "# Notes\nchecked by audit" in text


def test_pptx_slides(tmp_path: Path) -> None:
    data = pptx_bytes([("Roadmap", "Ship the files API"), ("Risks", "Zip bombs")])
    text = extract_text(write(tmp_path / "a.pptx", data), "pptx")
    assert text.index("Roadmap") < text.index("Ship the files API") < text.index("Risks")


def test_epub_follows_the_spine(tmp_path: Path) -> None:
    data = epub_bytes(["Chapter one text.", "Chapter two text."])
    text = extract_text(write(tmp_path / "a.epub", data), "epub")
    assert text.index("Chapter two text.") < text.index("Chapter one text.")
    assert "color" not in text


@pytest.mark.parametrize("fmt", ["docx", "xlsx", "pptx", "epub"])
def test_corrupt_archives_are_refused(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ExtractionError, match="not a valid document archive"):
        extract_text(write(tmp_path / f"a.{fmt}", b"PK\x03\x04 truncated"), fmt)
    buffer = tmp_path / f"b.{fmt}"
    with zipfile.ZipFile(buffer, "w") as z:  # a valid zip that is not the format
        z.writestr("hello.txt", "hi")
    with pytest.raises(ExtractionError, match="cannot be read"):
        extract_text(buffer, fmt)


@pytest.mark.parametrize("fmt,member", [("docx", "word/document.xml"),
                                        ("xlsx", "xl/worksheets/sheet1.xml"),
                                        ("pptx", "ppt/slides/slide1.xml"),
                                        ("epub", "OEBPS/c0.xhtml")])
def test_zip_bombs_are_refused_before_inflating(tmp_path: Path, fmt: str, member: str) -> None:
    path = write(tmp_path / f"bomb.{fmt}", zip_bomb(member))
    assert path.stat().st_size < 200_000
    with pytest.raises(ExtractionError, match="zip bomb"):
        extract_text(path, fmt)


def test_zip_limits_on_size_and_entries(tmp_path: Path) -> None:
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(30):
            z.writestr(f"f{i}.xml", "x" * 1000)
    check_zip(path, ZipLimits())
    with pytest.raises(ExtractionError, match="entries"):
        check_zip(path, ZipLimits(max_members=10))
    with pytest.raises(ExtractionError, match="inflate"):
        check_zip(path, ZipLimits(max_uncompressed_bytes=10_000))


def test_decode_text_refuses_undecodable_bytes() -> None:
    with pytest.raises(ExtractionError):
        decode_text(b"\x81\x30\x81")  # a truncated GB18030 sequence, invalid UTF-8 too


async def test_isolated_extraction_in_a_child_process(tmp_path: Path) -> None:
    limits = ZipLimits()
    path = write(tmp_path / "a.docx", docx_bytes(["Read in a child process."]))
    text = await extract_isolated(path, "docx", limits, timeout_s=120, max_memory_bytes=2**32)
    assert text == "Read in a child process."
    broken = write(tmp_path / "b.pdf", b"no pdf here")
    with pytest.raises(ExtractionError, match="not a PDF"):
        await extract_isolated(broken, "pdf", limits, timeout_s=120, max_memory_bytes=2**32)
    bomb = write(tmp_path / "c.xlsx", zip_bomb("xl/worksheets/sheet1.xml"))
    with pytest.raises(ExtractionError, match="zip bomb"):
        await extract_isolated(bomb, "xlsx", limits, timeout_s=120, max_memory_bytes=2**32)


async def test_a_reader_out_of_memory_is_an_unreadable_document(tmp_path: Path) -> None:
    path = write(tmp_path / "big.txt", "x" * (64 * 2**20))
    with pytest.raises(ExtractionError, match="memory|reader stopped"):
        await extract_isolated(path, "txt", ZipLimits(), timeout_s=120,
                               max_memory_bytes=96 * 2**20)
