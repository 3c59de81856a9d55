"""Sources stage (`repo_snapshots`): which repositories are read, their safe git mirrors, and the
file manifest of one commit with why each skipped path is skipped.

    changes        what the change sensor adds, removes and requests on one tick
    git            safe git: allow-listed transport, no hooks or LFS smudge, bare mirrors
    gitattributes  linguist-vendored / -generated attributes of `.gitattributes` files
    manifest       the file manifest of one commit, read from git objects only
    optout         the per-repository opt-out file `.coder-assets.yaml`
    repos          repository references, partition keys and the snapshot rule
"""
