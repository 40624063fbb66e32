"""The example's app: tracked tasks doing real work, and the demo commands."""
