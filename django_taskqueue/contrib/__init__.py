"""Integrations with optional packages; each subpackage imports its package, core never does."""
