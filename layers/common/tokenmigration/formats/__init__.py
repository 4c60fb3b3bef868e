"""Wire formats of the two systems we do not own (docs/compat.md)."""
