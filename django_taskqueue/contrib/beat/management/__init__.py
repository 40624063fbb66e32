"""Management commands of the beat integration."""
