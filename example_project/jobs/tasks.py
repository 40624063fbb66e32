"""The example's tasks: real work, each recorded by django-taskqueue.

Every task uses :class:`~django_taskqueue.TrackedTask` as its base, so a plain
``.delay()`` leaves a TaskLog with its progress history and events; ``.submit()``
also records the owner. The tasks the API may start (``TASK_TYPES`` in settings) take
the file to work on as their first argument, ``file_path``, and open it with
:func:`~django_taskqueue.open_allowed_file`: the API checked the path when the task was
started, and the helper checks it again when the task reads it (the file may have been
replaced by a symlink to somewhere else meanwhile).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import zlib
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from smtplib import SMTPException
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from django_taskqueue import TrackedTask, open_allowed_file

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- images


@shared_task(base=TrackedTask, bind=True, task_type="image", name="jobs.tasks.process_image")
def process_image(
    self: TrackedTask,
    file_path: str,
    width: int = 800,
    quality: int = 70,
    watermark: str = "django-taskqueue",
    **options: Any,
) -> dict[str, Any]:
    """Resize an image, stamp a watermark and save it as a compressed JPEG.

    Args:
        file_path: the image (any format Pillow reads).
        width: the width to scale down to (the aspect ratio is kept; never scaled up).
        quality: JPEG quality, 1-95.
        watermark: the text stamped in the bottom-right corner; empty for none.
        **options: ignored (the API may pass extra options).

    Returns:
        The output file (relative to MEDIA_ROOT), sizes before and after, and the saving.
    """
    from PIL import Image, ImageDraw, ImageFont

    source = Path(file_path)
    with open_allowed_file(file_path) as handle, Image.open(handle) as opened:
        opened.load()
        original_size = opened.size
        image = opened.convert("RGB")
        original_bytes = os.fstat(handle.fileno()).st_size
    self.update_progress(10, message="opened")

    if image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    self.update_progress(40, message="resized")

    if watermark:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        font = ImageFont.load_default(size=max(12, image.width // 30))
        left, top, right, bottom = draw.textbbox((0, 0), watermark, font=font)
        margin = max(8, image.width // 80)
        position = (image.width - (right - left) - margin, image.height - (bottom - top) - margin)
        draw.text(position, watermark, font=font, fill=(255, 255, 255, 150))
        image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    self.update_progress(70, message="watermarked")

    output = settings.OUTPUT_DIR / f"{source.stem}-w{image.width}.jpg"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    output.write_bytes(buffer.getvalue())
    self.update_progress(100, message="compressed")
    return {
        "output": str(output.relative_to(settings.MEDIA_ROOT)),
        "original_size": list(original_size),
        "size": list(image.size),
        "original_bytes": original_bytes,
        "bytes": output.stat().st_size,
        "saved_percent": round(100 * (1 - output.stat().st_size / original_bytes), 1),
    }


# --------------------------------------------------------------------------- documents

_WORD = re.compile(r"[a-z][a-z'-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Words too common to say what a text is about (the same pattern as the counting itself).
_STOPWORDS = frozenset(
    _WORD.findall(
        """about after all also an and any are as at be because been but by can could did do
        does for from had has have he her his how if in into is it its just more most no not of
        on one or other our out over so some such than that the their them then there these they
        this those to under up was we were what when where which while who will with would you
        your"""
    )
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_words(text: str) -> Counter[str]:
    return Counter(word for word in _words(text) if word not in _STOPWORDS and len(word) > 2)


def _summary(text: str, counts: Counter[str], sentences: int) -> str:
    """An extractive summary: the sentences whose words are the most frequent, in order."""
    candidates = [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]
    scored = []
    for index, sentence in enumerate(candidates):
        words = [w for w in _words(sentence) if w in counts]
        if words:
            scored.append((sum(counts[w] for w in words) / math.sqrt(len(words)), index))
    chosen = sorted(index for _, index in sorted(scored, reverse=True)[:sentences])
    return " ".join(candidates[index] for index in chosen)


@shared_task(base=TrackedTask, bind=True, task_type="document", name="jobs.tasks.process_document")
def process_document(
    self: TrackedTask, file_path: str, summary_sentences: int = 3, **options: Any
) -> dict[str, Any]:
    """Count a text document's lines, words and characters, and summarise it.

    The summary is also written next to the processed files as ``<name>.summary.txt``.

    Args:
        file_path: a UTF-8 text file.
        summary_sentences: how many sentences the summary keeps.
        **options: ignored (the API may pass extra options).
    """
    source = Path(file_path)
    with open_allowed_file(file_path, "r", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    self.update_progress(20, message="read")
    counts = _content_words(text)
    stats = {
        "lines": len(text.splitlines()),
        "words": len(text.split()),
        "characters": len(text),
    }
    self.update_progress(50, message="counted")
    summary = _summary(text, counts, summary_sentences)
    self.update_progress(80, message="summarised")
    output = settings.OUTPUT_DIR / f"{source.stem}.summary.txt"
    output.write_text(summary + "\n", encoding="utf-8")
    self.update_progress(100, message="saved")
    return {
        **stats,
        "top_words": counts.most_common(10),
        "summary": summary,
        "output": str(output.relative_to(settings.MEDIA_ROOT)),
    }


@shared_task(base=TrackedTask, bind=True, task_type="document", name="jobs.tasks.count_words")
def count_words(self: TrackedTask, file_path: str) -> dict[str, int]:
    """Count the content words of one document (a chord's header task)."""
    with open_allowed_file(file_path, "r", encoding="utf-8", errors="replace") as handle:
        counts = _content_words(handle.read())
    self.update_progress(100, message=f"{sum(counts.values())} words")
    return dict(counts)


@shared_task(base=TrackedTask, bind=True, name="jobs.tasks.merge_word_counts")
def merge_word_counts(
    self: TrackedTask, counts: list[dict[str, int]], top: int = 10
) -> dict[str, Any]:
    """Add up the word counts of several documents (a chord's body)."""
    total: Counter[str] = Counter()
    for index, one in enumerate(counts, start=1):
        total.update(one)
        self.update_progress(current=index, total=len(counts), message=f"merged {index}")
    return {
        "documents": len(counts),
        "words": sum(total.values()),
        "distinct_words": len(total),
        "top_words": total.most_common(top),
    }


# --------------------------------------------------------------------------- large files


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="video",
    name="jobs.tasks.process_video",
    soft_time_limit=540,
    time_limit=600,
)
def process_video(
    self: TrackedTask,
    file_path: str,
    chunk_size: int = 1 << 20,
    delay: float = 0.0,
    **options: Any,
) -> dict[str, Any]:
    """Read a large file in chunks: checksum it and write a segment index.

    Progress is reported per chunk and the task stops at the next chunk when it is
    cancelled (from the admin, the API or :func:`django_taskqueue.actions.cancel`).

    Args:
        file_path: the file (the demo's is ~50 MB of random bytes).
        chunk_size: bytes per chunk.
        delay: seconds to pause after each chunk, so the demo's progress can be watched.
        **options: ignored (the API may pass extra options).
    """
    source = Path(file_path)
    digest = hashlib.sha256()
    segments = []
    done = 0
    with open_allowed_file(file_path) as handle:
        total = os.fstat(handle.fileno()).st_size
        chunks = max(1, math.ceil(total / chunk_size))
        for number in range(1, chunks + 1):
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            digest.update(chunk)
            segments.append({"offset": done, "size": len(chunk), "adler32": zlib.adler32(chunk)})
            done += len(chunk)
            self.update_progress(current=done, total=total, message=f"chunk {number} of {chunks}")
            # A cooperative cancel point: one cheap SELECT per chunk.
            self.check_cancelled()
            if delay:
                time.sleep(delay)
    index = settings.OUTPUT_DIR / f"{source.name}.segments.json"
    index.write_text(json.dumps({"sha256": digest.hexdigest(), "segments": segments}))
    return {
        "bytes": done,
        "chunks": len(segments),
        "sha256": digest.hexdigest(),
        "index": str(index.relative_to(settings.MEDIA_ROOT)),
    }


# --------------------------------------------------------------------------- e-mail

# Transient SMTP errors are retried with exponential backoff (1 s, 2 s, 4 s... capped at
# 60 s, randomised so a crowd of retries does not hit the server at once); the fourth
# failure fails the task, and django-taskqueue records every attempt.
_EMAIL_RETRY: dict[str, Any] = {
    "autoretry_for": (SMTPException,),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 3,
}


def _user(user_id: int) -> Any:
    return get_user_model().objects.get(pk=user_id)


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="email",
    name="jobs.tasks.send_welcome_email",
    # At most one welcome mail a second per worker: a sign-up burst must not trip the
    # mail provider's own rate limit.
    rate_limit="60/m",
    **_EMAIL_RETRY,
)
def send_welcome_email(self: TrackedTask, user_id: int) -> dict[str, Any]:
    """Send the welcome mail to a new user."""
    user = _user(user_id)
    sent = send_mail(
        subject=f"Welcome, {user.get_username()}!",
        message=(
            f"Hello {user.get_username()},\n\nyour account is ready. Upload an image or a "
            "document and watch its progress in the admin.\n"
        ),
        from_email=None,
        recipient_list=[user.email],
    )
    return {"to": user.email, "sent": sent}


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="email",
    name="jobs.tasks.send_password_reset_email",
    **_EMAIL_RETRY,
)
def send_password_reset_email(
    self: TrackedTask, user_id: int, base_url: str = "http://127.0.0.1:8000"
) -> dict[str, Any]:
    """Send a password-reset link made with Django's token generator."""
    user = _user(user_id)
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = f"{base_url.rstrip('/')}/reset/{uid}/{token}/"
    sent = send_mail(
        subject="Reset your password",
        message=f"Someone asked to reset the password of {user.get_username()}.\n\n{link}\n",
        from_email=None,
        recipient_list=[user.email],
    )
    return {"to": user.email, "sent": sent}


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="email",
    name="jobs.tasks.send_completion_email",
    **_EMAIL_RETRY,
)
def send_completion_email(
    self: TrackedTask, result: Any, user_id: int, what: str = "Your task"
) -> dict[str, Any]:
    """Tell a user that their work is done.

    The last link of a chain: ``result`` is what the previous task returned.
    """
    user = _user(user_id)
    details = json.dumps(result, indent=2, default=str)
    if len(details) > 2000:
        details = details[:2000] + "\n..."
    sent = send_mail(
        subject=f"{what} is done",
        message=f"Hello {user.get_username()},\n\n{what} finished:\n\n{details}\n",
        from_email=None,
        recipient_list=[user.email],
    )
    return {"to": user.email, "sent": sent}


# --------------------------------------------------------------------------- reports

REPORT_FORMATS = ("csv", "xlsx", "pdf")


def _read_sales(path: str) -> list[dict[str, Any]]:
    with open_allowed_file(path, "r", newline="", encoding="utf-8") as handle:
        return [
            {
                "date": row["date"],
                "region": row["region"],
                "product": row["product"],
                "units": int(row["units"]),
                "revenue": int(row["units"]) * float(row["unit_price"]),
            }
            for row in csv.DictReader(handle)
        ]


def _summarise_sales(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """One line per (month, region): orders, units, revenue; ordered."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for row in rows:
        line = totals[(row["date"][:7], row["region"])]
        line[0] += 1
        line[1] += row["units"]
        line[2] += row["revenue"]
    return [
        [month, region, int(orders), int(units), round(revenue, 2)]
        for (month, region), (orders, units, revenue) in sorted(totals.items())
    ]


_REPORT_HEADER = ["month", "region", "orders", "units", "revenue"]


def _write_csv(path: Path, lines: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_REPORT_HEADER)
        writer.writerows(lines)


def _write_xlsx(path: Path, lines: list[list[Any]]) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Sales by month"
    sheet.append(_REPORT_HEADER)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for line in lines:
        sheet.append(line)
    last = len(lines) + 1
    sheet.append(["total", "", f"=SUM(C2:C{last})", f"=SUM(D2:D{last})", f"=SUM(E2:E{last})"])
    sheet.column_dimensions["A"].width = 10
    sheet.column_dimensions["B"].width = 12
    workbook.save(path)


def _write_pdf(path: Path, lines: list[list[Any]], title: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.cell(0, 6, f"Generated {timezone.now():%Y-%m-%d %H:%M} UTC", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    with pdf.table(col_widths=(20, 25, 15, 15, 25), text_align="RIGHT") as table:
        table.row(_REPORT_HEADER)
        for line in lines:
            table.row([str(value) for value in line])
    pdf.output(str(path))


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="report",
    name="jobs.tasks.generate_report",
    soft_time_limit=120,
    time_limit=150,
)
def generate_report(
    self: TrackedTask, file_path: str, format: str = "pdf", **options: Any
) -> dict[str, Any]:
    """Summarise a sales CSV (date, region, product, units, unit_price) into a report.

    The report is saved outside MEDIA_ROOT; its owner downloads it from the URL in the
    result, which checks who asks.

    Args:
        file_path: the sales CSV.
        format: ``csv``, ``xlsx`` or ``pdf``.
        **options: ignored (the API may pass extra options).
    """
    if format not in REPORT_FORMATS:
        raise ValueError(
            f"unknown report format {format!r}; use one of {', '.join(REPORT_FORMATS)}"
        )
    rows = _read_sales(file_path)
    self.update_progress(25, message=f"read {len(rows)} rows")
    lines = _summarise_sales(rows)
    self.update_progress(50, message=f"{len(lines)} report lines")
    output = settings.REPORTS_DIR / f"{self.request.id}.{format}"
    if format == "csv":
        _write_csv(output, lines)
    elif format == "xlsx":
        _write_xlsx(output, lines)
    else:
        _write_pdf(output, lines, title=f"Sales report: {Path(file_path).name}")
    self.update_progress(100, message=f"{format} written")
    return {
        "format": format,
        "rows": len(rows),
        "lines": len(lines),
        "revenue": round(sum(row["revenue"] for row in rows), 2),
        "bytes": output.stat().st_size,
        "download_url": reverse("report-download", args=[self.request.id]),
    }


# --------------------------------------------------------------------------- time limits


@shared_task(
    base=TrackedTask,
    bind=True,
    task_type="compute",
    name="jobs.tasks.count_primes",
    soft_time_limit=2,
    time_limit=4,
)
def count_primes(self: TrackedTask, limit: int, stop_at_soft_limit: bool = True) -> dict[str, Any]:
    """Count the primes below ``limit`` by trial division, within a time limit.

    At the soft limit (2 s) the task stops and returns what it has counted so far. With
    ``stop_at_soft_limit=False`` it ignores the soft limit, and the worker kills it at the
    hard limit (4 s): the TaskLog records it as failed with ``TimeLimitExceeded``.
    """
    soft_limit = (self.request.timelimit or (None, None))[1] or self.soft_time_limit
    began = time.monotonic()
    found = 0
    number = 2
    while number < limit:
        try:
            while number < limit:
                if all(number % d for d in range(2, math.isqrt(number) + 1)):
                    found += 1
                number += 1
                if number % 20_000 == 0:
                    self.update_progress(current=number, total=limit, message=f"{found} primes")
                    # Tracking swallows any error raised while it writes (so it never fails
                    # a task), a soft limit that fires during that write included: so look
                    # at the clock as well.
                    if stop_at_soft_limit and soft_limit and time.monotonic() - began > soft_limit:
                        raise SoftTimeLimitExceeded()
        except SoftTimeLimitExceeded:
            if stop_at_soft_limit:
                return {"limit": limit, "checked_below": number, "primes": found, "complete": False}
            logger.warning("count_primes ignores its soft time limit at %d", number)
    return {"limit": limit, "checked_below": number, "primes": found, "complete": True}


# --------------------------------------------------------------------------- housekeeping


@shared_task(base=TrackedTask, bind=True, task_type="maintenance", name="jobs.tasks.purge_outputs")
def purge_outputs(self: TrackedTask, max_age_hours: float = 24) -> dict[str, int]:
    """Delete processed files and reports older than ``max_age_hours`` (run by beat)."""
    cutoff = time.time() - timedelta(hours=max_age_hours).total_seconds()
    removed = 0
    for folder in (settings.OUTPUT_DIR, settings.REPORTS_DIR):
        for path in folder.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
    return {"removed": removed}
