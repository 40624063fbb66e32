"""PostgreSQL trigram indexes under the case-insensitive substring search of tasks.

Add ``"django_taskqueue.contrib.postgres"`` to ``INSTALLED_APPS`` on PostgreSQL and run
``migrate``: its one migration creates the ``pg_trgm`` extension (when it is missing) and
three GIN trigram indexes on exactly the expressions Django writes for ``icontains`` and
``iexact`` on ``TaskLog.file_name``, ``celery_task_id`` and ``task_name``
(``UPPER("file_name"::text)``...). The API's ``search`` filter and the admin's search then
use them without any change to their queries.

On any other database the migration does nothing (so the app can stay in the
``INSTALLED_APPS`` of a SQLite test run) and check ``django_taskqueue.W007`` says so. The
app imports no database driver and has no models.
"""
