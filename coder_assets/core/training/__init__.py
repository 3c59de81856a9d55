"""Training stage (`lora_adapter`): LoRA fine-tuning through mlx-lm, and the small dev model that
development, the demo and the tests train and serve in place of the production base model.

    lora           resumable LoRA fine-tuning through mlx-lm's trainer API
    adapter_files  a trained adapter's two files and their sha256s
    dev_model      the tiny Qwen2-architecture dev model and model directory versions
    pretrain       the dev model pretrained on the standard library, and its cache
"""
