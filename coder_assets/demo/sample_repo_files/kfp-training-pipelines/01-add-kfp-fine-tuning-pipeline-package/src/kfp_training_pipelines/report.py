from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class EvalReport:
    model: str
    scores: dict[str, float] = field(default_factory=dict)

    def passed(self, thresholds: dict[str, float]) -> bool:
        missing = set(thresholds) - set(self.scores)
        if missing:
            raise KeyError(f"no score for {sorted(missing)}")
        return all(self.scores[name] >= floor for name, floor in thresholds.items())


def load_report(text: str) -> EvalReport:
    data = json.loads(text)
    scores = {str(k): float(v) for k, v in data.get("scores", {}).items()}
    return EvalReport(model=data["model"], scores=scores)
