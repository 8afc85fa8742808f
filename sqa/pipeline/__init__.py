"""The notebook pipeline: run folders, profiles, notebook plumbing and the per-stage helpers."""
