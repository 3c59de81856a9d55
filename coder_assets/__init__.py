"""coder_assets: a Dagster code location that turns a Gitea organisation's repositories into a
code fine-tuning dataset and a LoRA adapter served on waterdeep."""
