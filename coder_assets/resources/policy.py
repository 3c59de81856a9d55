"""The promotion policy: how much worse on HumanEval a new adapter may be, and still ship, and
whether its FIM completions must get better."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from coder_assets.core.evaluation.evaluate import Decision, promotion_decision


class PromotionPolicyResource(dg.ConfigurableResource):
    """Settings of the promotion gate on eval_scores."""

    humaneval_margin: float = Field(
        default=0.02,
        description="Largest HumanEval pass@1 drop (paired, same problems) still accepted.",
    )
    fim_must_improve: bool = Field(
        default=True,
        description="FIM edit similarity must improve on the reference; False: it must not get "
        "worse (the demo's random dev model completes nothing before or after a short training).",
    )

    def decide(self, eval_scores: Mapping[str, Any]) -> Decision:
        """The gate's decision on eval_scores' value (base, adapter and deployed summaries)."""
        return promotion_decision(
            eval_scores["base"],
            eval_scores["adapter"],
            eval_scores.get("deployed"),
            humaneval_margin=self.humaneval_margin,
            fim_must_improve=self.fim_must_improve,
        )
