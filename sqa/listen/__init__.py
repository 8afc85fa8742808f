"""Listening tests: the ipywidgets UI (stage 07) and the append-only ratings store."""
