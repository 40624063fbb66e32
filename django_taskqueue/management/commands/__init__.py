"""The ``manage.py taskqueue_*`` commands."""
