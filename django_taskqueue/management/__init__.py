"""Management commands of django-taskqueue."""
