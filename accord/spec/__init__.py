"""Generators of the committed spec artefacts (spec/ at the repository root): JSON Schemas, golden message and
security vectors, the AsyncAPI document. They read the pure packages; nothing in the pure packages imports them."""
