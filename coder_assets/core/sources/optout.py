"""The per-repository opt-out file `.coder-assets.yaml` at the repository root.

exclude: true            # nothing of this repository is used
exclude:                 # or: these paths are not used
  - "secrets/**"
  - "*.sql"
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from coder_assets.core.errors import OptOutFileError
from coder_assets.core.globs import glob_matches

OPT_OUT_FILE = ".coder-assets.yaml"
_KNOWN_KEYS = frozenset({"exclude"})


@dataclass(frozen=True)
class OptOut:
    """What a repository asked to keep out of the dataset."""

    whole_repo: bool = False
    globs: tuple[str, ...] = ()

    def excludes(self, path: str) -> bool:
        return self.whole_repo or any(glob_matches(g, path) for g in self.globs)


def parse_opt_out(text: str, *, repo: str) -> OptOut:
    """Parse `.coder-assets.yaml`. A file that cannot be understood raises OptOutFileError: the
    repository is not snapshotted until it is fixed, because guessing could leak private code."""
    where = f"{OPT_OUT_FILE} in {repo}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OptOutFileError(f"{where} is not valid YAML ({exc}); fix or remove it") from exc
    if data is None:
        return OptOut()
    if not isinstance(data, dict):
        raise OptOutFileError(f"{where} must be a mapping such as 'exclude: true'")
    unknown = sorted(set(map(str, data)) - _KNOWN_KEYS)
    if unknown:
        raise OptOutFileError(
            f"{where} has unknown keys {unknown}; the only key is 'exclude' "
            "(true, or a list of path globs)"
        )
    exclude = data.get("exclude", False)
    if isinstance(exclude, bool):
        return OptOut(whole_repo=exclude)
    if isinstance(exclude, str):
        exclude = [exclude]
    if isinstance(exclude, list) and all(isinstance(g, str) and g.strip() for g in exclude):
        return OptOut(globs=tuple(g.strip() for g in exclude))
    raise OptOutFileError(
        f"{where}: 'exclude' must be true/false or a list of path globs, got {exclude!r}"
    )
