"""The demo's e-mail backend: files on disk, with a flaky SMTP server to retry against.

Mail is written as files to ``EMAIL_FILE_PATH`` (Django's file backend), so the demo
needs no mail server. To show the e-mail tasks' retries with exponential backoff, the
backend behaves like an unreliable SMTP server for two kinds of address:

- ``...+flaky@...``: the first delivery attempt of each message fails (in a task:
  the first attempt of each task run) with
  :class:`smtplib.SMTPServerDisconnected`, the next one succeeds;
- ``...+down@...``: every attempt fails, so the task runs out of retries.

Set ``EMAIL_BACKEND`` to Django's SMTP backend to send real mail instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from smtplib import SMTPServerDisconnected

from celery import current_task
from django.core.mail import EmailMessage
from django.core.mail.backends.filebased import EmailBackend


class DemoFileBackend(EmailBackend):
    """Django's file backend, failing like a flaky SMTP server for marked addresses."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Write the messages to files; raise for marked recipients (see the module doc)."""
        for message in email_messages:
            recipients = [address.lower() for address in message.recipients()]
            if any("+down@" in address for address in recipients):
                raise SMTPServerDisconnected("Connection unexpectedly closed (demo: +down address)")
            if any("+flaky@" in address for address in recipients) and self._first_attempt(message):
                raise SMTPServerDisconnected(
                    "Connection unexpectedly closed (demo: +flaky address)"
                )
        return int(super().send_messages(email_messages))

    def _first_attempt(self, message: EmailMessage) -> bool:
        # Attempts are counted in marker files, as retries run in other worker processes.
        # Keyed on the Celery task (a retry keeps its id), the subject and recipients, not
        # the body: a retry may render a different one (a new password-reset token).
        task = current_task
        task_id = str(task.request.id) if task is not None and task.request.id else ""
        key = "\0".join([task_id, message.subject, *message.recipients()])
        marker = Path(str(self.file_path)) / ".attempts" / hashlib.sha256(key.encode()).hexdigest()
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return False
        return True
