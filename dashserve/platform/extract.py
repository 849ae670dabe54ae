"""Text out of uploaded documents: TXT, MD, CSV, JSON(L), HTML, PDF, DOCX, XLSX, PPTX, EPUB.

``extract_text`` is blocking and CPU-bound; the server runs it through ``extract_isolated``,
in a child process (``python -m dashserve.platform.extract``) with a memory cap and a time
limit, so parsing never holds the server's GIL and a document that hangs or explodes is
killed without harm. The format comes from the file name's extension and must agree with the
bytes; a file that cannot be read raises ``ExtractionError`` with a reason the client can act
on. Office and EPUB files are zip archives: their directory is checked before anything is
inflated (``ZipLimits``), and Python's zipfile never inflates a member past the size its
directory declares.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import posixpath
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

FORMATS = {
    "txt": "txt", "text": "txt", "md": "md", "markdown": "md", "csv": "csv", "json": "json",
    "jsonl": "jsonl", "html": "html", "htm": "html", "pdf": "pdf", "docx": "docx",
    "xlsx": "xlsx", "pptx": "pptx", "epub": "epub",
}
ZIP_FORMATS = frozenset({"docx", "xlsx", "pptx", "epub"})


class ExtractionError(Exception):
    """The document cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """Bounds on a zip-based document, checked in its directory before reading it."""

    max_uncompressed_bytes: int = 256 * 2**20
    max_ratio: float = 200.0  # uncompressed / compressed, over the whole archive
    max_members: int = 20_000


def format_of(filename: str) -> str | None:
    """The document format for ``filename``'s extension, or None if unsupported."""
    _, dot, ext = filename.rpartition(".")
    return FORMATS.get(ext.lower()) if dot else None


def decode_text(data: bytes) -> str:
    """Text of a plain-text file: UTF-8 (with or without BOM), UTF-16 with a BOM, or GB18030."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8-sig", "gb18030"]
    for encoding in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        return text
    raise ExtractionError("the file is not text in UTF-8, UTF-16 or GB18030")


def check_zip(path: Path, limits: ZipLimits) -> None:
    """Refuse archives that are not zips or would inflate beyond ``limits`` (zip bombs)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ExtractionError(f"the file is not a valid document archive ({exc})") from None
    if len(members) > limits.max_members:
        raise ExtractionError(f"the archive holds {len(members)} entries, more than "
                              f"{limits.max_members}")
    total = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members)
    if total > limits.max_uncompressed_bytes:
        raise ExtractionError(f"the archive would inflate to {total} bytes, more than "
                              f"{limits.max_uncompressed_bytes}")
    if total > 2**20 and total > limits.max_ratio * max(packed, 1):
        raise ExtractionError(f"the archive's compression ratio ({total / max(packed, 1):.0f}:1)"
                              " is that of a zip bomb")


def _plain(path: Path) -> str:
    return decode_text(path.read_bytes())


def _json(path: Path) -> str:
    text = decode_text(path.read_bytes())
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"the file is not valid JSON ({exc})") from None
    return text


def _jsonl(path: Path) -> str:
    text = decode_text(path.read_bytes())
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExtractionError(f"line {n} is not valid JSON ({exc})") from None
    return text


def html_text(markup: str | bytes) -> str:
    """Visible text of an HTML or XHTML document, one block per line."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for hidden in soup(["script", "style", "head", "template", "noscript"]):
        hidden.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _html(path: Path) -> str:
    return html_text(decode_text(path.read_bytes()))


def _pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    with path.open("rb") as f:
        if b"%PDF-" not in f.read(1024):
            raise ExtractionError("the file is not a PDF")
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise ExtractionError("the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionError:
        raise
    except (PyPdfError, RecursionError) as exc:
        raise ExtractionError(f"the PDF cannot be read ({type(exc).__name__}: {exc})") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _docx(path: Path) -> str:
    import docx

    document = docx.Document(str(path))
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells]
            if any(cells):
                parts.append("\t".join(cells))
    return "\n".join(parts)


def _xlsx(path: Path) -> str:
    import openpyxl

    book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    try:
        parts: list[str] = []
        for sheet in book.worksheets:
            rows = ["\t".join("" if v is None else str(v) for v in row)
                    for row in sheet.iter_rows(values_only=True)]
            rows = [r for r in rows if r.strip()]
            if rows:
                parts.append(f"# {sheet.title}\n" + "\n".join(rows))
        return "\n\n".join(parts)
    finally:
        book.close()


def _pptx(path: Path) -> str:
    from pptx import Presentation

    slides: list[str] = []
    for shape_list in (slide.shapes for slide in Presentation(str(path)).slides):
        texts = [shape.text_frame.text.strip() for shape in shape_list
                 if shape.has_text_frame and shape.text_frame.text.strip()]
        if texts:
            slides.append("\n".join(texts))
    return "\n\n".join(slides)


_OPF = "{http://www.idpf.org/2007/opf}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"


def _epub(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        container = ElementTree.fromstring(archive.read("META-INF/container.xml"))
        rootfile = container.find(f".//{_CONTAINER}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise ExtractionError("the EPUB has no package document")
        opf_path = rootfile.get("full-path", "")
        opf = ElementTree.fromstring(archive.read(opf_path))
        base = posixpath.dirname(opf_path)
        items = {i.get("id"): i.get("href") for i in opf.iter(f"{_OPF}item")}
        order = [items.get(ref.get("idref")) for ref in opf.iter(f"{_OPF}itemref")]
        chapters = []
        for href in order:
            if href:
                name = posixpath.normpath(posixpath.join(base, href))
                chapters.append(html_text(archive.read(name)))
    return "\n\n".join(c for c in chapters if c)


_EXTRACTORS = {
    "txt": _plain, "md": _plain, "csv": _plain, "json": _json, "jsonl": _jsonl,
    "html": _html, "pdf": _pdf, "docx": _docx, "xlsx": _xlsx, "pptx": _pptx, "epub": _epub,
}


def extract_text(path: Path, fmt: str, limits: ZipLimits | None = None) -> str:
    """The text of the document at ``path`` in format ``fmt`` ("" when it holds none)."""
    if fmt in ZIP_FORMATS:
        check_zip(path, limits or ZipLimits())
    try:
        return _EXTRACTORS[fmt](path)
    except (ExtractionError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a parser trips on, the file is unreadable
        raise ExtractionError(
            f"the {fmt.upper()} file cannot be read ({type(exc).__name__}: {exc})") from None


_UNREADABLE = 2  # the child's exit status for "the document cannot be read" (reason on stdout)


async def extract_isolated(path: Path, fmt: str, limits: ZipLimits, *, timeout_s: float,
                           max_memory_bytes: int) -> str:
    """``extract_text`` in a child process, killed after ``timeout_s`` seconds; the child may
    use at most ``max_memory_bytes`` of address space."""
    with tempfile.TemporaryDirectory(prefix="dashserve-extract-") as tmp:
        out = Path(tmp) / "text"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dashserve.platform.extract", str(path), fmt, str(out),
            json.dumps(asdict(limits)), str(max_memory_bytes),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
        except BaseException:  # the time limit, or the request was cancelled
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode == 0:
            return out.read_text("utf-8")
        if proc.returncode == _UNREADABLE:
            raise ExtractionError(stdout.decode("utf-8", "replace").strip())
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise ExtractionError("the document could not be read (the reader stopped: "
                              f"{tail[0] if tail else f'exit status {proc.returncode}'})")


def _child(argv: list[str]) -> int:
    source, fmt, out, limits, memory = argv
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
    except (ImportError, ValueError, OSError):
        pass
    try:
        text = extract_text(Path(source), fmt, ZipLimits(**json.loads(limits)))
    except ExtractionError as exc:
        print(exc)  # noqa: T201 - the parent reads the reason here
        return _UNREADABLE
    except MemoryError:
        print("reading the document needs more memory than a document may use")  # noqa: T201
        return _UNREADABLE
    Path(out).write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
