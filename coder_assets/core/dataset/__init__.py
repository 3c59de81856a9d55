"""Dataset stage (`sample_signatures`, `dataset_splits`, `training_dataset`): every repository's
samples to one dataset version, decontaminated against HumanEval, deduplicated, split by cluster
and formatted for mlx-lm.

    build       the dataset version: units, decontamination, dedup, splits, records, manifest
    decontam    benchmark decontamination: HumanEval kept out of the data
    dedup       exact and MinHash-LSH near deduplication
    splits      train / valid / test by near-duplicate cluster
    formatting  mlx-lm `text` records within the training sequence length
    checks      validators behind the blocking checks on a built dataset
"""
