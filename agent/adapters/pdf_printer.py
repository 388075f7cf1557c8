"""The compliance report as PDF: Chromium's own print to PDF of the report page, where Chromium is installed.

Headless Chromium (`--print-to-pdf`) lays the page out as its print style sheet says (A4, page margins with the
document id and page numbers, table headers repeated on each page). It runs in a temp profile, with no network use
(the page is one self-contained file with a Content-Security-Policy), and is stopped after `timeout_s`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class PdfError(RuntimeError):
    """The PDF could not be made; the message says why and what to do."""


def find_chromium(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    explicit = env.get("ROLLBACK_AGENT_CHROMIUM")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise PdfError(f"ROLLBACK_AGENT_CHROMIUM={explicit} is not an executable file")
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError(
        "PDF needs Chromium (its print to PDF): install it (Debian: apt-get install chromium) or set "
        "ROLLBACK_AGENT_CHROMIUM to its path; or write --format html and print that"
    )


def print_pdf(html: str, output: Path, *, chromium: str | None = None, timeout_s: float = 120.0) -> int:
    """Write `html` as a PDF to `output` (atomically); returns its size in bytes. Raises PdfError."""
    binary = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="rollback-report-") as work:
        page = Path(work) / "report.html"
        page.write_text(html, encoding="utf-8")
        pdf = Path(work) / "report.pdf"
        command = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={Path(work) / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            page.as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PdfError(f"{binary} did not finish printing the report within {timeout_s:g}s") from None
        except OSError as exc:
            raise PdfError(f"cannot run {binary}: {exc.strerror or exc}") from None
        if result.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
            tail = " ".join((result.stderr or "").strip().splitlines()[-3:])[:400]
            raise PdfError(f"{binary} could not print the report (exit {result.returncode}): {tail or 'no output'}")
        data = pdf.read_bytes()
    if not data.startswith(b"%PDF-"):
        raise PdfError(f"{binary} wrote something that is not a PDF")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, output)
    return len(data)
