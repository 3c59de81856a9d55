"""How the smoke test compares served output with the adapter's own."""

from __future__ import annotations

import pytest

from coder_assets.core.deployment.smoke import same


@pytest.mark.parametrize(
    ("served", "expected", "equal"),
    [
        ("return x", "return x", True),
        ("return x", "return x<|", True),  # the server drops what could begin a stop token
        ("ds'", "ds' ", True),  # and a final whitespace token at max_tokens
        ("x\n", "x", True),
        ("return x", "return y", False),
        (" return x", "return x", False),  # leading text still counts
        ("", "x", False),
    ],
)
def test_served_output_equals_the_adapters_up_to_what_the_server_drops_at_the_end(
    served: str, expected: str, equal: bool
) -> None:
    assert same(served, expected) is equal
