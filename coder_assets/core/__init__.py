"""Pure logic of coder_assets: plain data in, plain data out, no Dagster imports.

One package per pipeline stage, named like the asset groups and the `assets/` modules, in pipeline
order; a stage imports only earlier stages and the modules at this top level, never a later stage
(`coder_assets_tests/test_layout.py` checks it):

    sources      repositories, their mirrors and the file manifest of one commit
    samples      instruction pairs and FIM samples from one snapshot's files
    dataset      per-repo samples to one decontaminated, deduplicated, split dataset version
    training     the dev model and LoRA fine-tuning through mlx-lm
    evaluation   completions, scores, the evaluation cache and the promotion decision
    deployment   releasing, installing and serving an adapter on waterdeep

Top-level modules, used across stages; they import no stage package:

    errors       exception types of coder_assets
    files        atomic file writes
    globs        gitignore-style path globs
    languages    file language by name; vendored, generated and lockfile paths
    notify       the text of a failure report
    constraints  the code-location image's locked dependencies (`python -m ...constraints`)
"""
