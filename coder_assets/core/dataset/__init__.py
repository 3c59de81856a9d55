"""Dataset stage: from per-repo samples to one deduplicated, split dataset version."""
