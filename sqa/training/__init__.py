"""Training: the loop, frozen-feature caching, pseudo-labeling (stage 03) and structured pruning."""
