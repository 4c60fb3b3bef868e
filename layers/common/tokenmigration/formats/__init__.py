"""Wire formats of the two systems we do not own (see shared/spec/compat.md)."""
