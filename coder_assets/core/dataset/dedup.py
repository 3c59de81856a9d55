"""Exact and near deduplication of training samples (BigCode / StarCoder practice).

Two passes over the samples:

1. exact: samples whose `normalise(text)` is equal form one group;
2. near: MinHash signatures over 5-gram token shingles are banded for LSH; every candidate pair
   the bands yield is re-checked with the EXACT Jaccard similarity of the two shingle sets and
   merged only at `>= threshold`, so the LSH S-curve becomes a cutoff. Merged pairs are clustered
   with union-find, so clusters are transitive (a~b and b~c put a, b and c in one cluster); a
   sample is dropped only as a near copy of one that is kept (see the keep rule).

LSH bands and rows: `lsh_params` picks the largest rows-per-band `r` (fewest spurious candidates)
for which a pair exactly at the threshold still collides in some band with probability
`>= lsh_recall`; with b = num_perm // r. For the defaults (num_perm=256, threshold=0.7,
lsh_recall=0.99) that is r=6, b=42: P(collide | J=0.7) = 0.995, P(collide | J=0.8) > 0.9999,
P(collide | J=0.5) = 0.48, P(collide | J=0.3) = 0.03. (datasketch's "optimal" parameters for 0.7
place the threshold near the S-curve's midpoint, which loses a large share of pairs just above
it; here false positives only cost a verification, so the curve is shifted left.)

Keep rule: samples are taken in the order of the smallest
`(sort_key, -len(normalise(text)), sample_id)`: the caller's preference first (`sort_key`,
default `()`), then the longest normalised text, then the smallest sample id. A sample within the
threshold (exact Jaccard) of one already kept is dropped with that one as its reference; any
other is kept. So a cluster keeps its best member and whatever in it is not a near copy of a
kept sample (the far end of a chain), and no two kept samples are near copies. The order is
total, so what is kept, and each cluster's id (its best member's id), depend only on the set of
samples, never on their input order.

Signatures are datasketch-compatible: `signatures()` computes, vectorised over a batch, exactly
what `datasketch.MinHash(num_perm, seed, hashfunc=int)` (datasketch >= 2.0, default scheme
"affine32": MurmurHash3 fmix32, then `a * h + b mod 2**32`) yields after `update_batch` with the
integer shingle hashes of `shingles()`; the values are `uint32`, as datasketch stores that
scheme. They depend on the text and the config only, so signatures stored per repo keyed by
sample id (`save_signatures` / `load_signatures`) can be reused for unchanged samples.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coder_assets.core.errors import CoderAssetsError

SIGNATURE_DTYPE = np.uint32
DEDUP_REASONS = ("exact", "near")

# Multi-character operators first, so `==` is one token, not two `=`.
_OPERATORS = (
    "**=", "//=", ">>=", "<<=", "...", "===", "!==", "<=>", "&&=", "||=", "??=",
    "==", "!=", "<=", ">=", "->", "=>", ":=", "::", "**", "//", "<<", ">>", "&&", "||", "??",
    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "++", "--", "<-",
)  # fmt: skip
_TOKEN_RE = re.compile(
    r"[^\W\d]\w*"  # identifiers and keywords (Unicode letters included)
    # operators; the lookahead keeps the long alternation off most punctuation (2x faster)
    r"|(?=[-+*/%=<>!&|^:.?])(?:" + "|".join(re.escape(op) for op in _OPERATORS) + r")"
    r"|0[xXoObB][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?"  # numbers
    r"|[^\s\w]"  # any other punctuation, one character each
)
_WHITESPACE_RE = re.compile(r"\s+")

# Constants of the shingle hash (polynomial over 64-bit token hashes, then a 64-bit finaliser).
_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
# MurmurHash3 fmix32, as datasketch's affine32 scheme applies it to each input hash.
_F32_M1 = np.uint32(0x85EBCA6B)
_F32_M2 = np.uint32(0xC2B2AE35)
# Rows of the (shingles x num_perm) matrix handled at once: 32k x 256 x 4 bytes = 32 MiB.
_CHUNK_SHINGLES = 32_768


class DedupError(CoderAssetsError, ValueError):
    """Deduplication was given inconsistent input (missing or mis-sized signatures, repeated
    sample ids, an unreadable signature file)."""


@dataclass(frozen=True)
class DedupConfig:
    """How samples are deduplicated. The defaults follow BigCode's near-dedup settings."""

    num_perm: int = 256
    threshold: float = 0.7  # LSH design point and the exact-Jaccard cutoff for merging
    shingle_size: int = 5  # 5-gram token shingles
    seed: int = 1
    lsh_recall: float = 0.99  # P(a pair at exactly `threshold` becomes an LSH candidate)


@dataclass(frozen=True)
class Sample:
    """One training sample as deduplication sees it. `sort_key` ranks samples for the keep rule:
    smaller sorts first and wins (for example `(repo_priority,)`); all keys must be comparable."""

    sample_id: str
    repo: str
    text: str
    sort_key: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DedupResult:
    """What deduplication decided.

    `kept` lists the kept ids in input order; `dropped` maps each dropped id to the kept id it
    is a copy of and whether its normalised text equals that one ("exact") or is within the
    threshold ("near"); `clusters` maps every id to its cluster id (the cluster's best member).
    `candidate_pairs` counts the distinct LSH candidate pairs, `verified_pairs` those whose exact
    Jaccard was computed (all of them), and `merged_pairs` lists the pairs within the threshold
    as `(id, id, jaccard)`, sorted.
    """

    kept: list[str]
    dropped: dict[str, tuple[str, str]]
    clusters: dict[str, str]
    candidate_pairs: int
    verified_pairs: int
    merged_pairs: list[tuple[str, str, float]] = field(default_factory=list)


def normalise(text: str) -> str:
    """The text as exact deduplication compares it: Unicode NFC, every whitespace run (spaces,
    tabs, newlines, `\\r\\n`) collapsed to one space, stripped. Case, comments and the spacing
    *between* tokens (`a=b` vs `a = b`) are kept: those differences are the near pass's to judge."""
    return _WHITESPACE_RE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def tokens(text: str) -> list[str]:
    """Code-aware tokens: identifiers/keywords, numbers (with decimals, exponents, 0x/0o/0b),
    common multi-character operators, and every other non-space character on its own.
    Whitespace is dropped, so re-indentation does not change the tokens."""
    return _TOKEN_RE.findall(text)


def lsh_params(config: DedupConfig) -> tuple[int, int]:
    """`(bands, rows)`: the largest rows `r` (with `bands = num_perm // r`) for which a pair at
    exactly `config.threshold` collides in some band with probability >= `config.lsh_recall`."""
    best = (config.num_perm, 1)
    for rows in range(1, config.num_perm + 1):
        bands = config.num_perm // rows
        if 1.0 - (1.0 - config.threshold**rows) ** bands >= config.lsh_recall:
            best = (bands, rows)
    return best


def shingles(text: str, size: int) -> set[int]:
    """The set of hashed `size`-gram token shingles of `text` (32-bit ints). A text with fewer
    than `size` tokens has one shingle, its whole token tuple; a text without tokens has none."""
    (hashes,) = shingle_hash_arrays([text], size)
    return set(hashes.tolist())


def jaccard(a: set[int], b: set[int]) -> float:
    """Exact Jaccard similarity of two shingle sets (0.0 when both are empty)."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def signatures(samples: Iterable[tuple[str, str]], config: DedupConfig) -> dict[str, np.ndarray]:
    """`sample_id -> MinHash hash values` (uint32, `config.num_perm` long) for `(sample_id, text)`
    pairs. Identical text and config give identical arrays in every process."""
    items = list(samples)
    if not items:
        return {}
    _check_unique([sample_id for sample_id, _ in items], "signatures()")
    result: dict[str, np.ndarray] = {}
    a, b = _permutations(config.num_perm, config.seed)
    empty = np.full(config.num_perm, np.iinfo(SIGNATURE_DTYPE).max, dtype=SIGNATURE_DTYPE)

    # Batches of documents bound the memory of the token arrays; each batch is hashed at once.
    batch_docs = 4096
    for start in range(0, len(items), batch_docs):
        batch = items[start : start + batch_docs]
        per_doc = shingle_hash_arrays([text for _, text in batch], config.shingle_size)
        matrix = _minhash_matrix(per_doc, a, b)
        for offset, (sample_id, _) in enumerate(batch):
            result[sample_id] = matrix[offset] if len(per_doc[offset]) else empty.copy()
    return result


def deduplicate(
    samples: Sequence[Sample], signatures: Mapping[str, np.ndarray], config: DedupConfig
) -> DedupResult:
    """Exact, then near deduplication of `samples` (see the module docstring). `signatures` must
    hold `signatures()` output (same config) for at least every exact-group representative;
    extra entries are ignored, so the caller may pass the union of its stored signatures."""
    if not samples:
        return DedupResult(kept=[], dropped={}, clusters={}, candidate_pairs=0, verified_pairs=0)
    ids = [s.sample_id for s in samples]
    _check_unique(ids, "deduplicate()")

    normalised = [normalise(s.text) for s in samples]
    keys = [(s.sort_key, -len(n), s.sample_id) for s, n in zip(samples, normalised, strict=True)]

    # Exact pass: group by a digest of the normalised text; the best member represents the group.
    groups: dict[bytes, list[int]] = {}
    for index, text in enumerate(normalised):
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        groups.setdefault(digest, []).append(index)
    reps = [min(members, key=keys.__getitem__) for members in groups.values()]
    rep_members = {rep: members for rep, members in zip(reps, groups.values(), strict=True)}
    reps.sort(key=keys.__getitem__)  # canonical order: independent of the input order

    matrix = _signature_matrix([ids[r] for r in reps], signatures, config.num_perm)
    bands, rows = lsh_params(config)
    pairs = _lsh_candidates(matrix, bands, rows)
    candidate_pairs = len(pairs)

    # Near pass: verify candidates with exact Jaccard, in canonical order, into union-find.
    parent = list(range(len(reps)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    involved = sorted({int(i) for pair in pairs for i in pair})
    shingle_sets = dict(
        zip(
            involved,
            (set(h.tolist()) for h in shingle_hash_arrays(
                [samples[reps[i]].text for i in involved], config.shingle_size
            )),
            strict=True,
        )
    )  # fmt: skip
    verified = 0
    merged: list[tuple[str, str, float]] = []
    near: dict[int, list[int]] = {}  # position -> positions within the threshold
    for x, y in pairs:
        verified += 1
        similarity = jaccard(shingle_sets[x], shingle_sets[y])
        if similarity >= config.threshold:
            root_x, root_y = find(x), find(y)
            if root_x != root_y:
                parent[max(root_x, root_y)] = min(root_x, root_y)
            near.setdefault(x, []).append(y)
            near.setdefault(y, []).append(x)
            first, second = sorted((ids[reps[x]], ids[reps[y]]))
            merged.append((first, second, similarity))

    # Keep: in the keep order, a representative is dropped when it is within the threshold of
    # one already kept (the best such is its reference), and kept otherwise. So every dropped
    # sample is a near copy of the one that stands for it, while a chain a~b~c whose ends are
    # far apart keeps both ends. Clusters (the components, named by their best member) still
    # decide the split, so nothing of a chain leaks across splits.
    keeper: dict[int, int] = {}  # position -> the kept position that stands for it
    for position in range(len(reps)):
        kept_near = [other for other in near.get(position, ()) if keeper.get(other) == other]
        keeper[position] = min(kept_near) if kept_near else position
    best_of_root: dict[int, int] = {}
    for position, rep in enumerate(reps):
        best_of_root.setdefault(find(position), rep)
    clusters: dict[str, str] = {}
    dropped: dict[str, tuple[str, str]] = {}
    kept_set: set[int] = set()
    for position, rep in enumerate(reps):
        kept = reps[keeper[position]]
        if keeper[position] == position:
            kept_set.add(rep)
        for member in rep_members[rep]:
            clusters[ids[member]] = ids[best_of_root[find(position)]]
            if member != kept:
                reason = "exact" if normalised[member] == normalised[kept] else "near"
                dropped[ids[member]] = (ids[kept], reason)
    return DedupResult(
        kept=[ids[i] for i in range(len(samples)) if i in kept_set],
        dropped=dropped,
        clusters=clusters,
        candidate_pairs=candidate_pairs,
        verified_pairs=verified,
        merged_pairs=sorted(merged),
    )


def similarity_join(
    sets: Sequence[frozenset[Hashable] | set[Hashable]],
    threshold: float,
    groups: Sequence[Hashable] | None = None,
) -> list[tuple[int, int, float]]:
    """Every pair `(i, j, jaccard)`, i < j, of `sets` whose exact Jaccard is `>= threshold`, and
    only pairs in different `groups` when groups are given; exact, without sampling.

    Prefix filtering: with the elements of every set ordered from rarest to most common, two
    sets with Jaccard >= t share at least ceil(t * |A|) elements, so they share one of the first
    |A| - ceil(t * |A|) + 1 elements of each; only pairs that do are verified. Rare elements
    come first, so the candidate lists stay short."""
    frequency: Counter[Hashable] = Counter(element for items in sets for element in items)
    rank = {
        element: n
        for n, (element, _) in enumerate(
            sorted(frequency.items(), key=lambda item: (item[1], repr(item[0])))
        )
    }
    index: dict[int, list[int]] = {}
    candidates: set[tuple[int, int]] = set()
    for i, items in enumerate(sets):
        if not items:
            continue
        ordered = sorted(rank[element] for element in items)
        prefix = len(ordered) - math.ceil(threshold * len(ordered) - 1e-9) + 1
        for element in ordered[:prefix]:
            for j in index.setdefault(element, []):
                if groups is None or groups[i] != groups[j]:
                    candidates.add((j, i))
            index[element].append(i)
    pairs = []
    for i, j in sorted(candidates):
        a, b = sets[i], sets[j]
        if min(len(a), len(b)) < threshold * max(len(a), len(b)):
            continue  # even a full overlap would stay under the threshold
        shared = len(a & b)
        similarity = shared / (len(a) + len(b) - shared)
        if similarity >= threshold:
            pairs.append((i, j, similarity))
    return pairs


def save_signatures(path: str | Path, sigs: Mapping[str, np.ndarray]) -> None:
    """Write `sigs` to an `.npz` file (`ids`, `hashvalues`) atomically: a temp file in the same
    directory, then `os.replace`."""
    path = Path(path)
    ids = np.array(sorted(sigs), dtype=str)
    if len(ids):
        values = np.stack([np.asarray(sigs[i], dtype=SIGNATURE_DTYPE) for i in ids.tolist()])
    else:
        values = np.zeros((0, 0), dtype=SIGNATURE_DTYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, ids=ids, hashvalues=values)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_signatures(path: str | Path) -> dict[str, np.ndarray]:
    """Read what `save_signatures` wrote."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            ids = data["ids"].tolist()
            values = data["hashvalues"]
    except (OSError, ValueError, KeyError) as err:
        raise DedupError(
            f"cannot read signatures from {path}: {err}; delete the file to recompute them"
        ) from err
    return {sample_id: values[i].copy() for i, sample_id in enumerate(ids)}


# --- internals -------------------------------------------------------------------------------


def _check_unique(ids: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for sample_id in ids:
        if sample_id in seen:
            raise DedupError(
                f"{where}: sample id {sample_id!r} appears more than once; ids must be unique"
            )
        seen.add(sample_id)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters: odd `a`, any `b`, from RandomState(seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def shingle_hash_arrays(texts: Sequence[str], size: int) -> list[np.ndarray]:
    """Per text, the uint64 array (values < 2**32) of its shingle hashes, vectorised over all
    texts: token ids through one vocabulary, 64-bit token hashes, then a polynomial over each
    window of `size` token hashes, finalised and cut to 32 bits."""
    if not texts:
        return []
    vocab: dict[str, int] = {}
    per_text_ids: list[list[int]] = []
    lookup = vocab.__getitem__
    for text in texts:
        toks = _TOKEN_RE.findall(text)
        try:
            per_text_ids.append(list(map(lookup, toks)))
        except KeyError:
            for tok in toks:
                if tok not in vocab:
                    vocab[tok] = len(vocab)
            per_text_ids.append(list(map(lookup, toks)))
    token_hashes = np.fromiter((_token_hash(t) for t in vocab), dtype=np.uint64, count=len(vocab))
    lengths = np.fromiter((len(t) for t in per_text_ids), dtype=np.int64, count=len(texts))
    flat = np.fromiter(
        itertools.chain.from_iterable(per_text_ids), dtype=np.int64, count=int(lengths.sum())
    )
    values = token_hashes[flat]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))

    with np.errstate(over="ignore"):
        # window[j] = sum_m values[j + m] * POLY**(size - 1 - m), wrapping mod 2**64.
        n_windows = max(len(values) - size + 1, 0)
        window = np.zeros(n_windows, dtype=np.uint64)
        for m in range(size):
            window = window * _POLY + values[m : m + n_windows]
        counts = np.maximum(lengths - size + 1, 0)
        positions = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        positions += np.arange(int(counts.sum()), dtype=np.int64)
        hashes = _finalise(window[positions])

    out = np.split(hashes, np.cumsum(counts)[:-1])
    for index in np.flatnonzero((lengths > 0) & (lengths < size)).tolist():
        # A short text is one shingle: its whole token tuple.
        whole = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for value in values[starts[index] : starts[index] + lengths[index]]:
                whole = whole * _POLY + value
        out[index] = _finalise(whole)
    return out


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (an avalanching bijection), wrapping mod 2**64."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> _S33)
        h = h * _MIX1
        h = h ^ (h >> _S33)
        h = h * _MIX2
        return h ^ (h >> _S33)


def _finalise(h: np.ndarray) -> np.ndarray:
    """A shingle hash: the high 32 bits of the mixed polynomial."""
    return _mix64(h) >> _S32


def _minhash_matrix(per_doc: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(docs x num_perm) uint32 minima of `fmix32(h) * a + b mod 2**32` over each doc's shingle
    hashes (docs without shingles get a row of zeros; the caller replaces it)."""
    counts = np.array([len(h) for h in per_doc], dtype=np.int64)
    hv = np.concatenate(per_doc).astype(np.uint32) if counts.sum() else np.zeros(0, np.uint32)
    with np.errstate(over="ignore"):
        hv = hv ^ (hv >> np.uint32(16))
        hv = hv * _F32_M1
        hv = hv ^ (hv >> np.uint32(13))
        hv = hv * _F32_M2
        hv = hv ^ (hv >> np.uint32(16))
    out = np.zeros((len(per_doc), len(a)), dtype=SIGNATURE_DTYPE)
    # Chunks of whole documents, about _CHUNK_SHINGLES shingles each, on a thread per core:
    # numpy releases the GIL inside these ufuncs.
    ends = np.cumsum(counts)
    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(per_doc):
        base = ends[first] - counts[first]
        last = int(np.searchsorted(ends, base + _CHUNK_SHINGLES, side="right"))
        last = max(last, first + 1)
        chunks.append((first, last))
        first = last

    def work(chunk: tuple[int, int]) -> None:
        lo, hi = chunk
        nonempty = np.flatnonzero(counts[lo:hi]) + lo
        if not len(nonempty):
            return
        begin, stop = int(ends[lo] - counts[lo]), int(ends[hi - 1])
        # (num_perm x shingles): reducing along contiguous rows is ~8x faster than the transpose.
        block = np.multiply.outer(a, hv[begin:stop])
        block += b[:, None]
        offsets = (ends[nonempty] - counts[nonempty]) - begin
        out[nonempty] = np.minimum.reduceat(block, offsets, axis=1).T

    workers = min(os.cpu_count() or 1, 8, len(chunks))
    if workers <= 1:
        for chunk in chunks:
            work(chunk)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, chunks))
    return out


def _signature_matrix(
    ids: Sequence[str], sigs: Mapping[str, np.ndarray], num_perm: int
) -> np.ndarray:
    matrix = np.empty((len(ids), num_perm), dtype=SIGNATURE_DTYPE)
    for row, sample_id in enumerate(ids):
        try:
            value = sigs[sample_id]
        except KeyError:
            raise DedupError(
                f"no MinHash signature for sample {sample_id!r}; compute it with signatures() "
                "and pass the union of every repo's signatures"
            ) from None
        if len(value) != num_perm:
            raise DedupError(
                f"signature of sample {sample_id!r} has {len(value)} values, the config asks for "
                f"num_perm={num_perm}; recompute stored signatures after changing num_perm"
            )
        matrix[row] = value
    return matrix


def _lsh_candidates(matrix: np.ndarray, bands: int, rows: int) -> list[tuple[int, int]]:
    """Distinct pairs `(i, j)`, `i < j`, of rows that agree on all `rows` values of some band,
    sorted. Each band is hashed to 64 bits (with its index mixed in, so bands never meet); a rare
    hash collision only adds a candidate, which verification then rejects."""
    n = len(matrix)
    if n < 2:
        return []
    with np.errstate(over="ignore"):
        keys = np.empty((bands, n), dtype=np.uint64)
        for band in range(bands):
            h = np.full(n, np.uint64(band + 1) * _MIX2, dtype=np.uint64)
            for col in range(band * rows, (band + 1) * rows):
                h = (h ^ matrix[:, col].astype(np.uint64)) * _POLY
            keys[band] = _mix64(h)
    flat = keys.ravel()
    owner = np.tile(np.arange(n, dtype=np.int64), bands)
    order = np.argsort(flat, kind="stable")
    flat, owner = flat[order], owner[order]
    same = flat[1:] == flat[:-1]
    if not same.any():
        return []
    # Runs of equal keys: every pair inside a run is a candidate. Most runs are pairs; those are
    # handled at once, longer runs one by one.
    edges = np.diff(np.concatenate(([False], same, [False])).astype(np.int8))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) + 1
    two = run_ends - run_starts == 2
    x, y = owner[run_starts[two]], owner[run_starts[two] + 1]
    codes = [np.minimum(x, y) * n + np.maximum(x, y)]
    for run_start, run_end in zip(run_starts[~two].tolist(), run_ends[~two].tolist(), strict=True):
        members = np.unique(owner[run_start:run_end])
        left, right = np.triu_indices(len(members), k=1)
        codes.append(members[left] * n + members[right])
    unique = np.unique(np.concatenate(codes))
    return list(zip((unique // n).tolist(), (unique % n).tolist(), strict=True))
