"""Data: audio I/O, the manifest schema, corpus adapters, merging (stage 01) and torch datasets."""
