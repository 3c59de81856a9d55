"""Redaction precision on the labelled set of the tests (coder_assets_tests/secret_cases.py):
true secrets caught and lookalikes redacted, per kind.

    .venv/bin/python benchmarks/redaction_precision.py

Goal: every true secret caught, at most 3 lookalikes redacted.
"""

from __future__ import annotations

from collections import defaultdict

from coder_assets_tests.secret_cases import evaluate, labelled_cases


def main() -> None:
    cases = labelled_cases()
    outcomes = evaluate(cases)
    lines = sum(case.text.count("\n") for case in cases)
    secrets: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    lookalikes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for outcome in outcomes:
        case = outcome.case
        if case.is_secret:
            secrets[case.kind][0] += len(case.secrets) - len(outcome.missed)
            secrets[case.kind][1] += len(case.secrets)
        else:
            lookalikes[case.kind][0] += int(outcome.changed)
            lookalikes[case.kind][1] += 1
    print(f"labelled set: {len(cases)} snippets, {lines} lines\n")
    print("| true secrets | caught |\n|---|---:|")
    for kind, (caught, total) in sorted(secrets.items()):
        print(f"| {kind} | {caught}/{total} |")
    caught = sum(v[0] for v in secrets.values())
    total = sum(v[1] for v in secrets.values())
    print(f"| **all {len(secrets)} kinds** | **{caught}/{total}** |\n")
    print("| lookalikes | redacted |\n|---|---:|")
    for kind, (changed, total) in sorted(lookalikes.items()):
        print(f"| {kind} | {changed}/{total} |")
    changed = sum(v[0] for v in lookalikes.values())
    total = sum(v[1] for v in lookalikes.values())
    print(f"| **all** | **{changed}/{total}** |")


if __name__ == "__main__":
    main()
