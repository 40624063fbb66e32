"""Tests of the housekeeping tasks, commands, presets and the beat integration."""
