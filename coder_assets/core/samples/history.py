"""CommitPackFT-style changes from a repository's history: small commits by people (not bots or
dependency-update tools) that modify exactly one existing file and whose subject is an imperative
change description ("Drain NATS connection on SIGTERM"). The subject and the file's path become
the instruction; the changed hunks with a few lines of context, before and after, the input and
the output (`review_hunks`): the change as a reviewer reads it, not the whole file twice.

Everything is read from git objects of a (bare) repository: one `git log` lists the candidates
with their file stats, one `git cat-file --batch` process reads the blobs. Nothing is checked out,
so no symlink is followed and no filter or hook runs.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import git

from coder_assets.core.errors import GitError
from coder_assets.core.sources.git import run_git
from coder_assets.core.sources.manifest import MODE_GITLINK, MODE_SYMLINK, BlobReader

# Why a commit yields no change, in the order they are tested; a subject rejected by
# `is_imperative_subject` counts as "subject:<reason>" (its reasons are SUBJECT_REASONS).
SKIP_REASONS = (
    "root",
    "merge",
    "automated",
    "subject",
    "not_single_file",
    "symlink",
    "submodule",
    "not_modification",
    "path_excluded",
    "binary",
    "too_many_changed_lines",
    "too_large",
    "not_utf8",
)

SUBJECT_REASONS = (
    "empty",
    "fixup",
    "merge",
    "revert",
    "wip",
    "version_bump",
    "too_short",
    "past_tense",
    "gerund",
    "third_person",
    "not_a_verb",
)


@dataclass(frozen=True)
class HistoryConfig:
    depth: int = 500  # how many first-parent commits back from the head to look at
    max_file_bytes: int = 100_000  # the file before and after the commit, each
    max_changed_lines: int = 200  # added + removed lines, as `git log --numstat` counts them
    min_subject_words: int = 2

    def __post_init__(self) -> None:
        for name in ("depth", "max_file_bytes", "max_changed_lines", "min_subject_words"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"HistoryConfig.{name} must be at least 1, not {value}")


@dataclass(frozen=True)
class CommitChange:
    """One commit that modified one file: `before` at `parent_sha`, `after` at `commit_sha`.
    `start_line`..`end_line` (1-based, inclusive) is the changed range in `after`; for a pure
    deletion both are the line where the removed lines were."""

    commit_sha: str
    parent_sha: str
    path: str
    subject: str
    before: str
    after: str
    start_line: int
    end_line: int
    committed_at: str  # ISO 8601 committer date


# --------------------------------------------------------------------------------------------
# The imperative-subject rule
# --------------------------------------------------------------------------------------------

# Base forms of verbs that start commit subjects. A word here is accepted even when it also ends
# like an inflected form ("embed", "ping", "process").
IMPERATIVE_VERBS = frozenset(
    """
    accept access adapt add address adjust adopt aggregate align allocate allow allowlist alter
    amend annotate append apply approve archive ask assert assign assume attach attempt audit
    authenticate authorize automate avoid await backfill backport ban batch begin benchmark bind
    block blocklist boot bootstrap bound break bring buffer build bump bundle bypass cache
    calculate call cancel cap capture carry cast catch centralize change check choose clamp
    clarify clean cleanup clear clip clone close collapse collect combine comment commit compare
    compile complete compress compute condense configure confirm connect consider consolidate
    consume contain convert copy correct count cover create cut debounce debug decide declare
    decode decouple decrease dedupe default defer define delay delegate delete demote deny
    denylist deploy deprecate derive describe detach detect determine disable discard disconnect
    display distinguish divide do document double downgrade drain draw drop dump duplicate edit
    eliminate embed emit emphasize enable encapsulate encode encrypt enforce enhance enlarge
    enqueue enrich ensure enumerate escape estimate evaluate evict exclude execute exit expand
    expect expire explain explore export expose express extend extract factor fail fall feed
    fetch fill filter finalize find finish fix flag flatten flip flush fold follow force fork
    format forward free freeze gate gather generalize generate get give group grow guard halve
    handle hardcode harden hash hide highlight hoist hold honor honour hook identify ignore
    implement import improve include increase increment indent index infer inherit init
    initialize inject inline insert inspect install instantiate instrument integrate intercept
    introduce invalidate invert invoke isolate iterate join jump keep kill label launch leave
    lengthen let lift limit link lint list listen load localize lock log loosen lower maintain
    make manage map mark mask match measure memoize mention merge migrate minimize mirror mock
    modernize modify monitor mount move multiply mute name narrow negate nest normalize note
    notify nudge obey offer offload omit open optimize order organize output override overwrite
    package pad paginate parallelize parameterize parametrize parse partition pass patch pause
    persist pick pin ping place plot plug plumb point polish poll populate port post precompute
    prefer prefetch prefix prepare prepend preserve prevent print prioritize process profile
    promote prompt propagate propose protect provide provision prune publish pull purge push put
    query queue quote raise randomize rate read rearrange rebase rebuild recalculate receive
    reconcile record recover recurse redact redirect reduce refactor refer reference refine
    reformat refresh register reject relax release reload remember remove rename render reorder
    reorganize repair rephrase replace reply report represent request require reroute rerun
    reserve reset reshape resize resolve respect restart restore restrict restructure retain
    retire retry return reuse reverse revert review revise reword rework rewrite roll rotate
    round route run sample sanitize save scaffold scale scan schedule scope score scroll seal
    search secure seed select send separate serialize serve set settle setup share shift shim
    ship shorten show shrink shuffle shut sign silence simplify skip sleep slice slow snapshot
    sort spawn specify speed split squash stabilize stage start stash state stop store stream
    strengthen strip structure stub style submit subscribe substitute summarize supply support
    suppress swallow swap switch sync synchronize tag tail teach test thread throttle throw tidy
    tighten time toggle tolerate track train transform translate trap treat trigger trim
    truncate try tune turn tweak type unblock undo unify uninstall unlock unpin unwrap update
    upgrade upload upsert use validate vendor verify wait walk warn watch whitelist widen wire
    wrap write yield zero zip
    """.split()
)

# Irregular past tenses; the regular ones end in "ed".
_IRREGULAR_PAST = frozenset(
    """
    brought built caught chose did found froze gave got grew held hid kept knew left lost made
    paid ran rebuilt redid rewrote sent spent stood taught thought threw told took undid went
    wrote
    """.split()
)

# Words with a verb-forming ending ("-ize", "-ify", ...) that are not verbs.
_NOT_VERBS = frozenset(
    """
    accurate adequate certificate climate concise corporate delicate enterprise expertise
    immediate intermediate likewise otherwise paradise premise precise private ultimate
    """.split()
)

_VERB_PREFIXES = ("auto", "dis", "pre", "re", "un", "de", "co")
_VERB_SUFFIXES = ("ize", "ise", "ify", "ate")

_FIXUP = re.compile(r"^(fixup|squash|amend)!", re.IGNORECASE)
_MERGE = re.compile(
    r"^merged?\s+(branch|branches|pull\s+request|remote-tracking|tag|commit|changes|['\"#])"
    r"|^merged?\b.*\binto\b",
    re.IGNORECASE,
)
_REVERT = re.compile(r"^revert\s+[\"']", re.IGNORECASE)
# A conventional-commit type ("feat(api)!:") or a component ("net/http:") before the description.
_TOPIC_PREFIX = re.compile(r"^[\w./-]+(\([^)]*\))?!?:\s+")
_VERSION = re.compile(r"(?<![\w.])v?\d+\.\d+(\.\d+)*([-+][0-9A-Za-z.]+)?(?![\w.])")
_ONLY_VERSION = re.compile(
    r"^((release|version|tag)\s+)?v?\d+(\.\d+)+([-+][0-9A-Za-z.]+)?$", re.IGNORECASE
)
_VERSION_WORD = re.compile(r"\bversions?(\s+(to|number|numbers|string)\b|\s+v?\d|\s*$)")
_RELEASE_VERBS = frozenset(
    "cut downgrade pin prepare release tag unpin update upgrade version".split()
)
_VERSION_VERBS = _RELEASE_VERBS | frozenset("change increment raise set".split())
_WORD_EDGES = "\"'`.,:;!?()[]{}<>"


def is_imperative_subject(subject: str, *, min_words: int = 2) -> tuple[bool, str]:
    """`(True, "")` when `subject` reads as an imperative change description, else
    `(False, reason)` with a reason from SUBJECT_REASONS.

    The rule, in order:
    1. rejected outright: empty subjects, `fixup!`/`squash!`/`amend!`, git's merge subjects
       ("Merge branch ...", "Merge pull request ...", "Merge x into y"), git's revert subjects
       (`Revert "..."`), and "wip" as the first or last word;
    2. a leading topic ("feat(api):", "docs:", "net/http:") is set aside, the rest is the
       description;
    3. version bumps: a description that is only a version ("v1.2.3", "Release 1.2"), any "Bump
       ...", a release/upgrade verb (update, upgrade, pin, release, tag, ...) with a dotted version
       number anywhere, or such a verb (or set/change/increment/raise) with "version" at the end or
       followed by a number, "to" or "number";
    4. fewer than `min_words` words in the description is too short;
    5. the description's first word must be the base form of a verb: a word in IMPERATIVE_VERBS;
       or such a verb behind a prefix ("re", "un", "de", "pre", ...: "Reindex", "Unpin",
       "Re-enable"); or, for a word of at least six letters, a verb-forming ending ("-ize", "-ise",
       "-ify", "-ate": "Containerize", "Normalise") unless it is a known non-verb ("Certificate").
       Anything else is rejected, named by its form: an irregular past or "-ed" ending is
       past_tense ("Added", "Made"), "-ing" is gerund ("Adding"), an "-s" form of an accepted verb
       is third_person ("Updates", "Fixes"), and the rest is not_a_verb ("Initial commit").

    Nouns that are also verbs ("Test", "Index", "Document") pass: the rule checks the form of the
    first word, not its part of speech in context.
    """
    text = " ".join(subject.split())
    if not text:
        return False, "empty"
    if _FIXUP.match(text):
        return False, "fixup"
    if _MERGE.match(text):
        return False, "merge"
    if _REVERT.match(text):
        return False, "revert"
    raw_words = [_bare(word) for word in text.split()]
    if "wip" in (raw_words[0], raw_words[-1]):
        return False, "wip"
    description = _TOPIC_PREFIX.sub("", text, count=1)
    words = [_bare(word) for word in description.split()]
    words = [word for word in words if word]
    if not words:
        return False, "too_short"
    if words[0] == "wip":
        return False, "wip"
    if _is_version_bump(description, words[0]):
        return False, "version_bump"
    if len(words) < min_words:
        return False, "too_short"
    form = verb_form(words[0])
    return (True, "") if form == "base" else (False, form)


def verb_form(word: str) -> str:
    """The form of `word` (lower case): "base" when it is the base form of a verb by the rule
    of `is_imperative_subject`, else "past_tense", "gerund", "third_person" or "not_a_verb"."""
    if _is_base_verb(word):
        return "base"
    if word in _IRREGULAR_PAST or (len(word) > 3 and word.endswith("ed")):
        return "past_tense"
    if len(word) > 4 and word.endswith("ing"):
        return "gerund"
    if word.endswith("s"):
        stems = [word[:-1]]
        if word.endswith("es"):
            stems.append(word[:-2])
        if word.endswith("ies"):
            stems.append(word[:-3] + "y")
        if any(_is_base_verb(stem) for stem in stems):
            return "third_person"
    return "not_a_verb"


def _is_base_verb(word: str) -> bool:
    if word in IMPERATIVE_VERBS:
        return True
    for prefix in _VERB_PREFIXES:
        rest = word[len(prefix) :].removeprefix("-")
        if word.startswith(prefix) and rest in IMPERATIVE_VERBS:
            return True
    return (
        len(word) >= 6
        and word.isalpha()
        and word.endswith(_VERB_SUFFIXES)
        and word not in _NOT_VERBS
    )


def _is_version_bump(description: str, first_word: str) -> bool:
    if _ONLY_VERSION.match(description):
        return True
    if first_word == "bump":
        return True
    if first_word in _RELEASE_VERBS and _VERSION.search(description):
        return True
    return first_word in _VERSION_VERBS and bool(_VERSION_WORD.search(description.lower()))


def _bare(word: str) -> str:
    return word.strip(_WORD_EDGES).lower()


# --------------------------------------------------------------------------------------------
# Commits by bots and dependency-update tools
# --------------------------------------------------------------------------------------------

# `renovate[bot]`, `dependabot[bot]`, `github-actions[bot]`, `bot-ross`, `ci-bot <...>`.
_BOT_AUTHOR = re.compile(r"\[bot\]|(?<![a-z])bot(?![a-z])|renovate|dependabot|github-actions")
# Conventional-commit scopes Renovate and Dependabot use, and their subjects.
_UPDATE_SCOPE = re.compile(
    r"^\w+\((?:deps?|dev-deps|container|helm|github-actions?|github-release|docker|mise|"
    r"renovate|terraform|ansible|pip|npm|go|gomod|cargo)\)!?:"
)
_UPDATE_SUBJECT = re.compile(
    r"\bupdate (?:image|helm ?release|helm chart|chart|dependency|dependencies|module|"
    r"docker tag|digest|github[- ]actions?|terraform|pre-commit hook|flake input)s?\b"
    r"|\block ?file maintenance\b|\bpin dependenc|\bupdate .* to v?\d[\w.\-]*\s*$"
    r"|➔|→"
)


def is_automated_commit(author: str, subject: str) -> bool:
    """Whether a commit was written by a bot or a dependency-update tool (Renovate, Dependabot,
    `chore(deps): ...`, "update image ... ( 1.2.3 ➔ 1.2.4 )"): nothing a person asked for, so
    no training pair."""
    low = subject.lower()
    return bool(
        _BOT_AUTHOR.search(author.lower())
        or _UPDATE_SCOPE.match(low)
        or _UPDATE_SUBJECT.search(low)
    )


# --------------------------------------------------------------------------------------------
# The change as a reviewer reads it
# --------------------------------------------------------------------------------------------

REVIEW_CONTEXT_LINES = 3


def review_hunks(before: str, after: str, context: int = REVIEW_CONTEXT_LINES) -> tuple[str, str]:
    """The parts of a file a change touches, before and after: each hunk with `context`
    unchanged lines around it and a header naming its lines (`@@ -12,7 @@` before,
    `@@ +12,9 @@` after), hunks in file order. A reviewer's view of the change, instead of the
    whole file twice."""
    old, new = _lines(before), _lines(after)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    olds: list[str] = []
    news: list[str] = []
    for group in matcher.get_grouped_opcodes(context):
        i1, i2 = group[0][1], group[-1][2]
        j1, j2 = group[0][3], group[-1][4]
        olds.append(f"@@ -{i1 + 1},{i2 - i1} @@\n" + _ended("".join(old[i1:i2])))
        news.append(f"@@ +{j1 + 1},{j2 - j1} @@\n" + _ended("".join(new[j1:j2])))
    return "".join(olds), "".join(news)


def commit_instruction(subject: str, path: str) -> str:
    """The instruction of a commit pair: the commit's subject, the file, and what to write."""
    return (
        f"{subject}\n\nThe change is to `{path}`. Below are the parts of the file it touches "
        "(each `@@` header gives the first line and the line count); write them as they read "
        "after the change."
    )


def _ended(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


# --------------------------------------------------------------------------------------------
# Walking the history
# --------------------------------------------------------------------------------------------

_HEX_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_COMMIT_MARK = "\x1e"
_FIELD_SEP = "\x1f"
# One token per commit: the mark, then sha, parents, committer date, author, subject (last, so a
# stray separator in it cannot shift the other fields).
_LOG_FORMAT = "%x1e%H%x1f%P%x1f%cI%x1f%an <%ae>%x1f%s"


@dataclass(frozen=True)
class _FileChange:
    status: str  # M, A, D, T, R<score>, C<score>
    old_mode: str
    new_mode: str
    old_sha: str
    new_sha: str
    path: str
    added: int | None = None  # None for a binary diff
    removed: int | None = None


@dataclass
class _LogCommit:
    sha: str
    parents: list[str]
    committed_at: str
    subject: str
    author: str = ""  # "name <email>"
    files: list[_FileChange] = field(default_factory=list)
    numstat: list[tuple[int | None, int | None, str]] = field(default_factory=list)


def commit_changes(
    repo: Path,
    head_sha: str,
    config: HistoryConfig = HistoryConfig(),  # noqa: B008 - frozen, so a safe default
    *,
    keep_path: Callable[[str], bool] = lambda path: True,
) -> tuple[list[CommitChange], Counter[str]]:
    """The single-file changes in the first-parent history of `head_sha` in `repo` (bare or not),
    oldest first, and how many commits were skipped for each reason (see SKIP_REASONS).

    At most `config.depth` commits back from the head are looked at, merges included. A commit
    yields a change when it has one parent, an imperative subject, and modifies the content of
    exactly one existing regular file whose path `keep_path` accepts, with at most
    `config.max_changed_lines` lines added plus removed, and with both versions UTF-8 text of at
    most `config.max_file_bytes` bytes.
    """
    if not _HEX_SHA.match(head_sha):
        raise GitError(
            f"cannot walk the history of {repo}: {head_sha!r} is not a full commit SHA; pass the "
            "snapshot's head SHA"
        )
    commits = _log(repo, head_sha, config.depth)
    skipped: Counter[str] = Counter()
    candidates: list[tuple[_LogCommit, _FileChange]] = []
    for commit in commits:
        reason, change = _shape_skip_reason(commit, config, keep_path)
        if reason:
            skipped[reason] += 1
        elif change is not None:
            candidates.append((commit, change))
    changes: list[CommitChange] = []
    if candidates:
        try:
            reader = BlobReader(repo)
        except (git.GitError, OSError) as exc:
            raise GitError(f"cannot open the repository at {repo} to read blobs: {exc}") from exc
        with reader:
            for commit, change in candidates:
                reason, pair = _read_pair(reader, change, config.max_file_bytes)
                if pair is None:
                    skipped[reason] += 1
                    continue
                before, after = pair
                start, end = changed_line_range(before, after)
                changes.append(
                    CommitChange(
                        commit_sha=commit.sha,
                        parent_sha=commit.parents[0],
                        path=change.path,
                        subject=commit.subject,
                        before=before,
                        after=after,
                        start_line=start,
                        end_line=end,
                        committed_at=commit.committed_at,
                    )
                )
    changes.reverse()
    return changes, skipped


def changed_line_range(before: str, after: str) -> tuple[int, int]:
    """The 1-based inclusive range of the lines of `after` that differ from `before`: first to
    last changed line. Where lines were only removed, the line where they were (the last line
    when they were at the end). `(1, 1)` when nothing differs."""
    old, new = _lines(before), _lines(after)
    starts: list[int] = []
    ends: list[int] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        starts.append(j1 + 1)
        ends.append(max(j2, j1 + 1))
    if not starts:
        return 1, 1
    last = max(1, len(new))
    return min(min(starts), last), min(max(ends), last)


def _lines(text: str) -> list[str]:
    # Split on "\n" only, as git and editors number lines; str.splitlines also breaks on \r,
    # \f and Unicode separators.
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _shape_skip_reason(
    commit: _LogCommit, config: HistoryConfig, keep_path: Callable[[str], bool]
) -> tuple[str, _FileChange | None]:
    """Why `commit` yields no change, judged from the log alone, or `("", its one file)`."""
    if not commit.parents:
        return "root", None
    if len(commit.parents) > 1:
        return "merge", None
    if is_automated_commit(commit.author, commit.subject):
        return "automated", None
    ok, reason = is_imperative_subject(commit.subject, min_words=config.min_subject_words)
    if not ok:
        return f"subject:{reason}", None
    if len(commit.files) != 1:
        return "not_single_file", None
    change = commit.files[0]
    modes = (change.old_mode, change.new_mode)
    if MODE_SYMLINK in modes:
        return "symlink", None
    if MODE_GITLINK in modes:
        return "submodule", None
    if change.status != "M" or change.old_sha == change.new_sha:
        return "not_modification", None
    if not keep_path(change.path):
        return "path_excluded", None
    if change.added is None or change.removed is None:
        return "binary", None
    if change.added + change.removed > config.max_changed_lines:
        return "too_many_changed_lines", None
    return "", change


def _read_pair(
    reader: BlobReader, change: _FileChange, max_bytes: int
) -> tuple[str, tuple[str, str] | None]:
    blobs = [reader.read(sha, max_bytes + 1) for sha in (change.old_sha, change.new_sha)]
    if any(len(blob) > max_bytes for blob in blobs):
        return "too_large", None
    if any(b"\0" in blob for blob in blobs):
        return "binary", None
    try:
        before, after = (blob.decode("utf-8") for blob in blobs)
    except UnicodeDecodeError:
        return "not_utf8", None
    return "", (before, after)


def _log(repo: Path, head_sha: str, depth: int) -> list[_LogCommit]:
    """The first-parent history of `head_sha`, newest first, with each commit's raw diff and
    numstat against its first parent."""
    out = run_git(
        [
            "log",
            "--first-parent",
            f"--max-count={depth}",
            "-z",
            "--raw",
            "--numstat",
            "--no-abbrev",
            "-M",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            "--encoding=UTF-8",
            f"--format={_LOG_FORMAT}",
            head_sha,
            "--",
        ],
        cwd=repo,
        what=f"git log of {head_sha} in {repo}",
    )
    return _parse_log(out)


def _parse_log(out: str) -> list[_LogCommit]:
    """Parse `git log -z --raw --numstat` output. Paths are separate NUL-terminated tokens, so
    each record consumes a known number of them and a path can never be mistaken for a record."""
    tokens = out.split("\0")
    commits: list[_LogCommit] = []
    current: _LogCommit | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index].lstrip("\n")
        index += 1
        if token.startswith(_COMMIT_MARK):
            sha, parents, date, author, subject = token[1:].split(_FIELD_SEP, 4)
            current = _LogCommit(sha, parents.split(), date, subject, author)
            commits.append(current)
        elif current is None or not token:
            continue
        elif token.startswith(":"):
            old_mode, new_mode, old_sha, new_sha, status = token[1:].split()
            paths = 2 if status[0] in "RC" else 1
            path = tokens[index + paths - 1]
            index += paths
            current.files.append(_FileChange(status, old_mode, new_mode, old_sha, new_sha, path))
        else:
            added, removed, path = token.split("\t", 2)
            if not path:  # a rename or copy: the old and new paths follow
                path = tokens[index + 1]
                index += 2
            current.numstat.append((_count(added), _count(removed), path))
    for commit in commits:
        _attach_counts(commit)
    return commits


def _attach_counts(commit: _LogCommit) -> None:
    # git lists the raw records, then the numstat records, in the same order.
    if len(commit.numstat) == len(commit.files):
        counts = [(added, removed) for added, removed, _ in commit.numstat]
    else:
        by_path = {path: (added, removed) for added, removed, path in commit.numstat}
        counts = [by_path.get(change.path, (None, None)) for change in commit.files]
    commit.files = [
        replace(change, added=added, removed=removed)
        for change, (added, removed) in zip(commit.files, counts, strict=True)
    ]


def _count(field_text: str) -> int | None:
    return None if field_text == "-" else int(field_text)
