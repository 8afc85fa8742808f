"""Analysis: predictions over a manifest, metrics with bootstrap CIs, stage-06 tables and figures."""
