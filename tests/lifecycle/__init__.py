"""Tests of the lifecycle package (django_taskqueue.lifecycle), one file per module."""
