"""Training stage: the dev model and LoRA fine-tuning through mlx-lm."""
