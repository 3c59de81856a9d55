"""Samples stage (`instruction_pairs`, `fim_samples`): one snapshot's files filtered and redacted,
then turned into instruction pairs and fill-in-the-middle samples.

    prepare         a snapshot's files read, filtered and redacted before any sample is built
    filters         file-level quality filters (generated, minified, data files, long lines)
    secrets         finding and redacting secrets in repository text
    records         the records this stage produces: instruction pairs and FIM records
    extract_common  what every extractor returns, and the helpers they share
    extract_adr     pairs from architecture decision records (MADR)
    extract_go      pairs from Go source
    extract_python  pairs from Python source
    extract_yaml    pairs from Kubernetes, Flux and Argo manifests
    history         commit-history pairs: small human commits to one file
    quality         whether an instruction pair's answer is worth training on
    parsers         the tree-sitter parsers of the extractors and the syntax-aware FIM spans
    fim             FIM samples in Qwen2.5-Coder's format
"""
