"""CommitPackFT-style changes from history: the imperative-subject rule, the changed line range,
and the walk over real repositories, bare-cloned like the production mirrors."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from coder_assets.core.errors import GitError
from coder_assets.core.samples.history import (
    SKIP_REASONS,
    SUBJECT_REASONS,
    CommitChange,
    HistoryConfig,
    changed_line_range,
    commit_changes,
    is_automated_commit,
    is_imperative_subject,
    review_hunks,
)
from coder_assets.demo.sample_repos import SAMPLE_REPO_NAMES, create_sample_repos

EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z


class WorkRepo:
    """A working repository with an isolated git config and one commit a minute from EPOCH."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.minutes = 0
        self.author = ""
        if create:
            path.mkdir(parents=True)
            self.git("init", "-q", "-b", "main", "--template=", ".")

    def git(self, *args: str) -> str:
        date = f"{EPOCH + 60 * self.minutes} +0000"
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.update(
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="Test Author",
            GIT_AUTHOR_EMAIL="author@homelab.example",
            GIT_AUTHOR_DATE=date,
            GIT_COMMITTER_NAME="Test Committer",
            GIT_COMMITTER_EMAIL="committer@homelab.example",
            GIT_COMMITTER_DATE=date,
        )
        proc = subprocess.run(
            ["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=True
        )
        return proc.stdout.strip()

    def commit(self, message: str, files: dict[str, str | bytes | None]) -> str:
        """Write (str/bytes), delete (None) or, for a value starting with "->", symlink files."""
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                self.git("rm", "-q", "--", rel)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            if isinstance(content, str) and content.startswith("->"):
                os.symlink(content[2:], target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
            self.git("add", "--", rel)
        self.minutes += 1
        author = [f"--author={self.author} <bot@users.example>"] if self.author else []
        self.git("commit", "-q", "--allow-empty", "-m", message, *author)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def bare_clone(self, dest: Path) -> Path:
        self.git("clone", "-q", "--bare", "--", str(self.path), str(dest))
        return dest


def numbered(count: int, word: str = "line") -> str:
    return "".join(f"{word} {n}\n" for n in range(1, count + 1))


GREETER = "def greet(name):\n    return 'hi ' + name\n\n\nprint(greet('world'))\n"
GREETER_FIXED = (
    "def greet(name):\n    if not name:\n        name = 'nobody'\n    return f'hi {name}'\n"
    "\n\nprint(greet('world'))\n"
)


# --------------------------------------------------------------------------------------------
# The imperative-subject rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Add retry to order publisher",
        "Fix off-by-one in the pager",
        "Drain NATS connection on SIGTERM",
        "Grow the JetStream file store to 20Gi",
        "Document NATS_URL and ORDERS_SUBJECT in README",
        "Remove the unused helper",
        "Use a context manager for the lock",
        "Handle empty responses from Gitea",
        "Test retry backoff doubling and cap",
        "Index the decisions in the README",
        "Embed the schema in the binary",  # in the list despite its "-ed" ending
        "Process events in batches",  # in the list despite its "-s" ending
        "Reindex the search table",  # prefix + listed verb
        "Re-enable the flaky test",
        "Unpin the base image",
        "Containerize the exporter",  # verb-forming suffix
        "Normalise line endings",
        "fix typo in error message",  # lower case is fine
        "feat(api): add pagination to the list endpoint",  # topic set aside
        "net/http: handle closed connections",
        "Merge overlapping intervals in the scheduler",  # a verb, not a merge commit
        "Release the lock before sleeping",  # no version: an ordinary verb
        "Set timeout to 30 seconds",
        "Update the version check logic",
    ],
)
def test_imperative_subjects_are_accepted(subject: str) -> None:
    assert is_imperative_subject(subject) == (True, "")


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Merge branch 'feature/x' into main", "merge"),
        ("Merge pull request #12 from alice/fix-pager", "merge"),
        ("Merge remote-tracking branch 'origin/main'", "merge"),
        ("Merge tag 'v1.2.0'", "merge"),
        ("Merge main into feature", "merge"),
        ('Revert "Add retry to order publisher"', "revert"),
        ("fixup! Add retry to order publisher", "fixup"),
        ("squash! Add retry", "fixup"),
        ("wip", "wip"),
        ("WIP", "wip"),
        ("WIP: retry logic", "wip"),
        ("[wip] retry logic", "wip"),
        ("retry logic wip", "wip"),
        ("Bump version to 1.2.3", "version_bump"),
        ("Bump nats.go to v1.37.0", "version_bump"),
        ("Bump markdownlint-cli2 hook to v0.13.0", "version_bump"),
        ("Bump lodash from 4.17.15 to 4.17.19", "version_bump"),
        ("Bump deps", "version_bump"),
        ("chore(deps): bump requests to 2.32.0", "version_bump"),
        ("v1.2.3", "version_bump"),
        ("1.2.3", "version_bump"),
        ("Release 1.2", "version_bump"),
        ("Release v1.2.3", "version_bump"),
        ("chore(release): 1.4.0", "version_bump"),
        ("Prepare release 2.0.0", "version_bump"),
        ("Update version", "version_bump"),
        ("Update Go version", "version_bump"),
        ("Set version to 0.3.0", "version_bump"),
        ("Increment version number", "version_bump"),
        ("Upgrade Django to 4.2", "version_bump"),
        ("Fix", "too_short"),
        ("docs: typo", "too_short"),
        ("Added foo", "past_tense"),
        ("Fixed the pager", "past_tense"),
        ("Made the pager faster", "past_tense"),
        ("Adding retries", "gerund"),
        ("Fixing the pager", "gerund"),
        ("Updates the README", "third_person"),
        ("Fixes #12", "third_person"),
        ("Adds retry to publisher", "third_person"),
        ("Initial commit", "not_a_verb"),
        ("Typo in README", "not_a_verb"),
        ("The pager is faster now", "not_a_verb"),
        ("Certificate renewal for the ingress", "not_a_verb"),
    ],
)
def test_non_imperative_subjects_are_rejected_with_their_reason(subject: str, reason: str) -> None:
    assert reason in SUBJECT_REASONS
    assert is_imperative_subject(subject) == (False, reason)


def test_min_words_sets_how_short_a_subject_may_be() -> None:
    assert is_imperative_subject("Fix pager", min_words=3) == (False, "too_short")
    assert is_imperative_subject("Fix", min_words=1) == (True, "")


# --------------------------------------------------------------------------------------------
# The changed line range
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("a\nb\nc\n", "a\nB\nc\n", (2, 2)),  # one line replaced
        ("a\nb\nc\n", "a\nb\nx\ny\nc\n", (3, 4)),  # lines inserted
        ("a\nb\nc\n", "x\nb\nc\ny\n", (1, 4)),  # first to last changed line
        ("a\nb\nc\nd\n", "a\nd\n", (2, 2)),  # pure deletion: where the lines were
        ("a\nb\nc\n", "a\nb\n", (2, 2)),  # deletion at the end: the last line
        ("a\nb\n", "", (1, 1)),  # everything deleted
        ("a\nb", "a\nb\n", (2, 2)),  # newline added at the end of the file
        ("a\r\nb\r\n", "a\r\nc\r\n", (2, 2)),  # CRLF lines count once
        ("a\fb\nc\n", "a\fb\nd\n", (2, 2)),  # a form feed is not a line break
        ("same\n", "same\n", (1, 1)),
    ],
)
def test_changed_line_range_spans_first_to_last_changed_line_of_after(
    before: str, after: str, expected: tuple[int, int]
) -> None:
    assert changed_line_range(before, after) == expected


# --------------------------------------------------------------------------------------------
# Walking real repositories
# --------------------------------------------------------------------------------------------


def test_single_file_modification_yields_one_change_with_before_after_and_range(
    tmp_path: Path,
) -> None:
    work = WorkRepo(tmp_path / "work")
    root = work.commit("Add greeter", {"greet.py": GREETER, "README.md": "# Greeter\n"})
    fix = work.commit("Handle an empty name in greet", {"greet.py": GREETER_FIXED})
    bare = work.bare_clone(tmp_path / "greeter.git")
    assert not (bare / ".git").exists()

    changes, skipped = commit_changes(bare, fix)

    assert changes == [
        CommitChange(
            commit_sha=fix,
            parent_sha=root,
            path="greet.py",
            subject="Handle an empty name in greet",
            before=GREETER,
            after=GREETER_FIXED,
            start_line=2,
            end_line=4,
            committed_at="2024-01-01T00:02:00+00:00",
        )
    ]
    assert skipped == Counter({"root": 1})


@pytest.fixture(scope="module")
def mixed_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """A bare repository whose history holds one commit for every skip reason and two good ones:
    (bare repo, the good commits' SHAs oldest first, head). Tests only read it."""
    tmp_path = tmp_path_factory.mktemp("mixed")
    work = WorkRepo(tmp_path / "work")
    work.commit(
        "Start the project",
        {
            "app.py": GREETER,
            "lib.py": "x = 1\n",
            "vendor/dep.py": "y = 1\n",
            "logo.bin": b"\x89PNG\x00\x01\x02",
            "notes.txt": "cafe\n",
            "big.txt": numbered(150),
            "large.txt": numbered(400, "padding padding"),
            "current": "->app.py",
        },
    )
    good = [work.commit("Handle an empty name in greet", {"app.py": GREETER_FIXED})]
    work.commit("wip", {"app.py": GREETER_FIXED + "# more\n"})
    work.commit("Bump version to 1.2.3", {"lib.py": "x = 2\n"})
    work.commit("Added foo", {"lib.py": "x = 3\nfoo = 1\n"})
    work.commit("Update app and lib", {"app.py": GREETER, "lib.py": "x = 4\n"})
    work.commit("Add a helper module", {"helper.py": "z = 1\n"})
    work.commit("Remove the helper module", {"helper.py": None})
    work.git("mv", "lib.py", "core.py")
    work.commit("Rename lib.py to core.py", {})
    work.commit("Point current at core.py", {"current": "->core.py"})
    work.commit("Replace the logo", {"logo.bin": b"\x89PNG\x00\x03\x04"})
    work.commit("Write the notes in Latin-1", {"notes.txt": "caf\xe9\n".encode("latin-1")})
    work.commit("Rewrite the big file", {"big.txt": numbered(150, "row")})
    work.commit("Fix one line of the large file", {"large.txt": numbered(399, "padding padding")})
    work.commit("Patch the vendored dependency", {"vendor/dep.py": "y = 2\n"})
    work.commit("chore(deps): update module nats.go to v1.37.0", {"app.py": GREETER + "#\n"})
    work.commit("feat(container): update image app ( 1.2.3 ➔ 1.2.4 )", {"app.py": GREETER})
    work.author = "renovate[bot]"
    work.commit("Pin the base image", {"app.py": GREETER + "# pinned\n"})
    work.author = ""
    good.append(work.commit("Restore the greeter in app.py", {"app.py": GREETER}))
    (work.path / "app.py").chmod(0o755)
    work.git("add", "app.py")
    work.commit("Make app.py executable", {})
    work.git("checkout", "-q", "-b", "side")
    work.commit("Tweak the side branch", {"core.py": "x = 5\n"})
    work.git("checkout", "-q", "main")
    work.minutes += 1
    work.git("merge", "-q", "--no-ff", "-m", "Merge branch 'side'", "side")
    good.append(work.commit("Append a closing comment to app.py", {"app.py": GREETER + "# done\n"}))
    return work.bare_clone(tmp_path / "mixed.git"), good, work.head()


def keep_unvendored(path: str) -> bool:
    return not path.startswith("vendor/")


def test_unwanted_commits_are_skipped_and_counted_by_reason(
    mixed_history: tuple[Path, list[str], str],
) -> None:
    bare, good, head = mixed_history
    config = HistoryConfig(max_file_bytes=6_000, max_changed_lines=200)
    assert len(numbered(400, "padding padding")) > 6_000

    changes, skipped = commit_changes(bare, head, config, keep_path=keep_unvendored)

    assert [change.commit_sha for change in changes] == good
    assert (changes[-1].before, changes[-1].after) == (GREETER, GREETER + "# done\n")
    assert changes[-1].start_line == changes[-1].end_line == 6
    assert skipped == Counter(
        {
            "root": 1,
            "merge": 1,
            "subject:wip": 1,
            "subject:version_bump": 1,
            "subject:past_tense": 1,
            "not_single_file": 1,
            "not_modification": 4,  # add, delete, rename, mode-only change
            "symlink": 1,
            "binary": 1,
            "not_utf8": 1,
            "too_many_changed_lines": 1,
            "too_large": 1,
            "path_excluded": 1,
            "automated": 3,  # chore(deps), an image update, a commit by renovate[bot]
        }
    )
    assert {key.split(":")[0] for key in skipped} <= set(SKIP_REASONS)


def test_depth_limits_how_many_commits_are_walked(
    mixed_history: tuple[Path, list[str], str],
) -> None:
    bare, good, head = mixed_history
    changes, skipped = commit_changes(bare, head, HistoryConfig(depth=3), keep_path=keep_unvendored)
    # The head, the merge and "Make app.py executable"; the side branch is never walked.
    assert [change.commit_sha for change in changes] == [good[-1]]
    assert skipped == Counter({"merge": 1, "not_modification": 1})


def test_same_repo_and_head_give_identical_output(
    mixed_history: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    bare, _, head = mixed_history
    first = commit_changes(bare, head, keep_path=keep_unvendored)
    again = commit_changes(bare, head, keep_path=keep_unvendored)
    other_clone = tmp_path / "again.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", "--", str(bare), str(other_clone)],
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
        check=True,
        capture_output=True,
    )
    elsewhere = commit_changes(other_clone, head, keep_path=keep_unvendored)
    assert first == again == elsewhere


def test_head_that_is_not_a_full_sha_is_refused(
    mixed_history: tuple[Path, list[str], str],
) -> None:
    bare, _, head = mixed_history
    for head_arg in ("HEAD", head[:12], "--output=/tmp/x"):
        with pytest.raises(GitError, match="not a full commit SHA"):
            commit_changes(bare, head_arg)


def test_config_values_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="HistoryConfig.depth"):
        HistoryConfig(depth=0)


def test_sample_repos_yield_changes_and_skip_their_wip_and_version_bump_commits(
    tmp_path: Path,
) -> None:
    works = create_sample_repos(tmp_path / "work")
    assert [work.name for work in works] == list(SAMPLE_REPO_NAMES)
    for work_path in works:
        work = WorkRepo(work_path, create=False)
        bare = work.bare_clone(tmp_path / f"{work_path.name}.git")
        head = work.head()
        subjects = work.git("log", "--first-parent", "--format=%s").splitlines()
        wip = [s for s in subjects if s == "wip"]
        bumps = [s for s in subjects if s.startswith("Bump ")]
        assert wip and bumps, f"{work_path.name} lost its wip or version-bump commit"

        changes, skipped = commit_changes(bare, head)

        assert changes, f"{work_path.name} yielded no change; skipped {dict(skipped)}"
        assert skipped["subject:wip"] == len(wip)
        assert skipped["subject:version_bump"] == len(bumps)
        assert not {change.subject for change in changes} & {*wip, *bumps}
        assert sum(skipped.values()) + len(changes) == len(subjects)
        times = [change.committed_at for change in changes]
        assert times == sorted(times)  # oldest first
        for change in changes:
            assert change.before != change.after
            assert 1 <= change.start_line <= change.end_line <= len(change.after.splitlines())


@pytest.mark.parametrize(
    ("author", "subject", "automated"),
    [
        ("renovate[bot] <bot@renovateapp.com>", "Update dependency x", True),
        ("bot-ross[bot] <bot@users.example>", "Add the runner", True),
        ("dependabot[bot] <support@github.com>", "Bump requests from 2.31 to 2.32", True),
        ("Jane <jane@homelab.example>", "chore(deps): update module nats.go to v1.37.0", True),
        ("Jane <jane@homelab.example>", "fix(container): update image app ( 1.2 ➔ 1.3 )", True),
        ("Jane <jane@homelab.example>", "Update helm release cilium to 1.16.1", True),
        ("Jane <jane@homelab.example>", "Lock file maintenance", True),
        ("Jane <jane@homelab.example>", "Drain the NATS connection on SIGTERM", False),
        ("Robot Lovers <robots@homelab.example>", "Add the robots page", False),
        ("Jane <jane@homelab.example>", "Update the README with the restore steps", False),
    ],
)
def test_commits_by_bots_and_dependency_updates_are_recognised(
    author: str, subject: str, automated: bool
) -> None:
    assert is_automated_commit(author, subject) is automated


def test_review_hunks_show_each_change_with_its_context_and_lines() -> None:
    before = numbered(40)
    after = before.replace("line 5\n", "line five\n").replace("line 30\n", "line 30\nnew\n")
    old, new = review_hunks(before, after)
    assert old.count("@@ -") == 2 and new.count("@@ +") == 2
    # numbered() counts from 1: "line 5" is line 5, and three lines of context come before it
    assert old.startswith("@@ -2,7 @@\nline 2\n") and "line 5\n" in old and "five" not in old
    assert new.startswith("@@ +2,7 @@\nline 2\n") and "line five\n" in new
    assert "@@ +28,7 @@\n" in new and "line 30\nnew\nline 31\n" in new
    assert "line 15\n" not in old + new  # far from any change: not shown
