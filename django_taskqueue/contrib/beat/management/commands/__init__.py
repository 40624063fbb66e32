"""``manage.py taskqueue_beat_sync`` and ``taskqueue_beat_check``."""
