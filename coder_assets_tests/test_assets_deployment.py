"""deployed_adapter against a real `mlx_lm.server` on loopback serving the trained dev model (the
embedded default's base, from the shared cache): a good deploy
is proven served; a damaged adapter, an adapter of another base shape and a server that never
becomes ready are all rolled back with the old adapter verified serving; re-deploying changes
nothing; pruning keeps the deployed and previous versions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from coder_assets.assets.deployment import DeployedAdapterConfig, curl_command, deployed_adapter
from coder_assets.core.deployment.deploy import DeployDir, Links
from coder_assets.core.deployment.smoke import Fingerprint, FingerprintPrompt, outputs
from coder_assets.core.evaluation.generation import InProcessGenerator
from coder_assets.core.samples.fim import format_fim
from coder_assets.core.training.adapter_files import ADAPTER_FILES, sha256_file
from coder_assets.core.training.dev_model import (
    DevModelConfig,
    build_dev_model,
    random_lora_adapter,
)
from coder_assets.resources import waterdeep_host
from coder_assets.resources.deployment import AdapterDeploymentResource, AdapterReleaseResource
from coder_assets.resources.service import ModelServerResource
from coder_assets.resources.waterdeep import WaterdeepResource
from coder_assets_tests.conftest import free_port

pytestmark = pytest.mark.slow

CORPUS = [
    f"def total_{i}(values):\n    result = 0\n    for v in values:\n        result += v * {i}\n"
    f"    return result\n"
    for i in range(12)
] * 10
READY_TIMEOUT = 10.0
# The managed server's interpreter: Python itself, except that a server started for an adapter
# whose folder name contains "hang" sleeps instead of serving (it never becomes ready).
WRAPPER = """#!/bin/sh
case "$*" in
  *hang*) exec "{python}" -c 'import time; time.sleep(3600)' "$@" ;;
  *) exec "{python}" "$@" ;;
esac
"""


def _prompts(generator: InProcessGenerator) -> list[FingerprintPrompt]:
    code = CORPUS[3]
    start, end = code.index("    for v"), code.index("    return")
    fim = format_fim(code[:start], code[end:], code[start:end])
    messages = (("user", "Write a function that sums a list."),)
    rendered = generator.tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], add_generation_prompt=True, tokenize=False
    )
    fim_prompt = fim[: fim.index("<|fim_middle|>") + len("<|fim_middle|>")]
    return [
        FingerprintPrompt("fim", "fim-1", fim_prompt, (), 12),
        FingerprintPrompt(
            "fim", "fim-2", "<|fim_prefix|>def f(x):\n<|fim_suffix|>\n<|fim_middle|>"
        ),
        FingerprintPrompt("chat", "chat-1", rendered, messages, 12),
    ]


def trimmed(outputs) -> tuple[str, ...]:
    """Outputs without what the server drops at the end and the smoke test ignores there (a
    final whitespace token or the start of a stop token; see core.deployment.smoke.same)."""
    return tuple(output.rstrip("<| \t\n") for output in outputs)


class Site:
    """The trained dev model, candidate adapters with their fingerprints and releases, a deploy
    directory and one managed model server that all tests share (each leaves v1 deployed)."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root = root
        self.model = model
        other = build_dev_model(root / "other-model", CORPUS, DevModelConfig(hidden_size=32))
        self.sources = {
            "v1": random_lora_adapter(self.model, root / "adapters" / "v1", seed=1),
            "v2": random_lora_adapter(self.model, root / "adapters" / "v2", seed=2),
            "v3": random_lora_adapter(self.model, root / "adapters" / "v3", seed=3),
            "v-hang": random_lora_adapter(self.model, root / "adapters" / "v-hang", seed=4),
            "v-shape": random_lora_adapter(other, root / "adapters" / "v-shape", seed=5),
        }
        base = InProcessGenerator(self.model)
        self.prompts = _prompts(base)
        self.base_outputs = outputs(base, self.prompts)
        self.fingerprints = {}
        for version, source in self.sources.items():
            if version == "v-shape":
                # Evaluated on its own base; the fingerprint is never reached.
                answers = self.base_outputs
            else:
                answers = outputs(InProcessGenerator(self.model, source), self.prompts)
            self.fingerprints[version] = Fingerprint(
                tuple(self.prompts), self.base_outputs, answers
            )
        wrapper = root / "python-wrapper"
        wrapper.write_text(WRAPPER.format(python=sys.executable))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        self.deploy_dir = root / "deployed"
        self.server = ModelServerResource(
            model_path=str(self.model),
            state_dir=str(root / "server"),
            port=free_port(),
            adapter_link=str(self.deploy_dir / "latest"),
            python=str(wrapper),
            ready_timeout_seconds=READY_TIMEOUT,
        )
        self.waterdeep = WaterdeepResource(**waterdeep_host(), lock_file=str(root / "lock"))
        # The release repository: a release whose deploy fails is tagged rejected there.
        self.releases = root / "code-lora-adapters.git"
        self.adapter_repo = AdapterReleaseResource(
            remote=str(self.releases),
            work_dir=str(root / "release-work"),
            create_local_remote=True,
            lfs="never",
        )

    def release(self, version: str, source: Path) -> None:
        self.adapter_repo.release(source, {"adapter_version": version})

    def rejected_tags(self) -> dict[str, str]:
        """{rejected tag: its message} in the release repository."""
        out = subprocess.run(
            [
                "git",
                "-C",
                str(self.releases),
                "tag",
                "-l",
                "rejected/*",
                "--format=%(refname:short)%00%(contents)",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(line.split("\0", 1) for line in out.split("\n\n") if "\0" in line)

    def deploy(self, version: str, *, keep: int = 5, source: Path | None = None, fingerprint=True):
        source = source or self.sources[version]
        files = {name: sha256_file(source / name) for name in sorted(os.listdir(source))}
        with dg.build_asset_context() as context:
            return self._deploy(context, version, keep, source, files, fingerprint)

    def _deploy(self, context, version, keep, source, files, fingerprint):
        return deployed_adapter(
            context=context,
            config=DeployedAdapterConfig(smoke_timeout_seconds=60),
            lora_adapter={"version": version, "path": str(source)},
            adapter_release={
                "version": version,
                "tag": version,
                "files": files,
                "manifest": {"adapter_version": version},
            },
            eval_scores={
                "fingerprint": self.fingerprints[version].to_dict(),
                "adapter_files": {name: files[name] for name in ADAPTER_FILES},
            }
            if fingerprint
            else {"adapter_files": {name: files[name] for name in ADAPTER_FILES}},
            waterdeep=self.waterdeep,
            model_server=self.server,
            adapter_deployment=AdapterDeploymentResource(
                deploy_dir=str(self.deploy_dir), keep_versions=keep
            ),
            adapter_repo=self.adapter_repo,
            mlflow_tracking=None,
        )

    def served(self) -> tuple[str, ...]:
        from coder_assets.core.deployment.smoke import smoke_test

        options = self.server.client_options()
        report = smoke_test(self.server.url(), str(self.model), None, **options)
        assert report.passed, report.failures()
        fingerprint = self.fingerprints["v1"]
        from coder_assets.core.evaluation.generation import DEFAULT_MODEL, ServerGenerator

        with ServerGenerator(self.server.url(), DEFAULT_MODEL, **options) as server:
            return trimmed(
                server.chat([{"role": r, "content": c} for r, c in p.messages], p.max_tokens)
                if p.kind == "chat"
                else server.complete(p.prompt, p.max_tokens, p.stop)
                for p in fingerprint.prompts
            )

    def links(self) -> Links:
        return DeployDir(self.deploy_dir).links()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, trained_dev_model: Path) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("deployment"), trained_dev_model)
    try:
        site.deploy("v1")
        yield site
    finally:
        site.server.stop(timeout=10)


@pytest.fixture
def v1_deployed(site: Site) -> Iterator[Site]:
    """v1 deployed and served before the test, and again after it."""
    if site.links().latest != "v1" or not site.server.status().running:
        site.deploy("v1")
    yield site
    if site.links().latest != "v1":
        site.deploy("v1")


def _distinct(site: Site) -> None:
    # The random adapters answer the fixed prompts differently from the base and each other:
    # otherwise these tests could not tell which one is served.
    answers = {v: site.fingerprints[v].adapter for v in ("v1", "v2", "v3")}
    assert len({*answers.values(), site.base_outputs}) == 4


def test_first_deploy_serves_the_adapter_proven_by_its_own_output(site: Site):
    _distinct(site)
    assert site.links() == Links("v1", None)
    assert site.served() == trimmed(site.fingerprints["v1"].adapter)
    assert site.served() != trimmed(site.base_outputs)


def test_a_good_deploy_swaps_latest_and_the_new_adapter_is_served(v1_deployed: Site):
    site = v1_deployed
    result = site.deploy("v2")

    assert site.links() == Links("v2", "v1")
    assert site.served() == trimmed(site.fingerprints["v2"].adapter)
    assert result.value["previous"] == "v1"
    table = result.metadata["smoke_test"].value
    assert "served output equals the adapter's | pass" in table
    assert "adapter differs from the base model | pass" in table
    assert result.metadata["restarted"] is True


def test_redeploying_the_deployed_version_changes_nothing(v1_deployed: Site):
    site = v1_deployed
    pid = site.server.status().pid

    result = site.deploy("v1")

    assert result.metadata["restarted"] is False
    assert site.server.status().pid == pid
    assert site.links().latest == "v1"


def _failed_deploy(site: Site, version: str, **kwargs) -> str:
    with pytest.raises(dg.Failure) as failure:
        site.deploy(version, **kwargs)
    return failure.value.description


def test_a_truncated_adapter_file_is_refused_and_the_old_adapter_keeps_serving(
    v1_deployed: Site, tmp_path: Path
):
    site = v1_deployed
    broken = tmp_path / "v3-truncated"
    broken.mkdir()
    for name in ("adapter_config.json", "adapters.safetensors"):
        data = (site.sources["v3"] / name).read_bytes()
        (broken / name).write_bytes(data[:-100] if name.endswith("safetensors") else data)
    pid = site.server.status().pid

    message = _failed_deploy(site, "v3", source=broken)

    assert "truncated" in message and "adapters.safetensors" in message
    assert site.links() == Links("v1", None) or site.links().latest == "v1"
    assert site.server.status().pid == pid  # never touched
    assert site.served() == trimmed(site.fingerprints["v1"].adapter)


def test_garbled_adapter_weights_fail_the_smoke_test_and_are_rolled_back(
    v1_deployed: Site, tmp_path: Path
):
    site = v1_deployed
    garbled = tmp_path / "v3-garbled"
    garbled.mkdir()
    (garbled / "adapter_config.json").write_bytes(
        (site.sources["v3"] / "adapter_config.json").read_bytes()
    )
    # Same size, valid header, different numbers: only the served output can tell.
    (garbled / "adapters.safetensors").write_bytes(
        (site.sources["v2"] / "adapters.safetensors").read_bytes()
    )
    before = site.links()

    site.release("v3", garbled)

    message = _failed_deploy(site, "v3", source=garbled)

    assert "smoke test of adapter v3 failed" in message
    assert "Rolled back" in message and "verified" in message
    assert site.links() == before
    assert site.served() == trimmed(site.fingerprints["v1"].adapter)
    # Nobody takes the released but undeployable v3 for a good adapter.
    rejected = site.rejected_tags()
    assert list(rejected) == ["rejected/v3"]
    assert "smoke test of adapter v3 failed" in rejected["rejected/v3"]


def test_a_release_that_is_not_the_evaluated_adapter_is_not_deployed(
    v1_deployed: Site, tmp_path: Path
):
    site = v1_deployed
    files = {name: sha256_file(site.sources["v2"] / name) for name in ADAPTER_FILES}
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as failure:
        deployed_adapter(
            context=context,
            config=DeployedAdapterConfig(smoke_timeout_seconds=60),
            lora_adapter={"version": "v2", "path": str(site.sources["v2"])},
            adapter_release={"version": "v2", "tag": "v2", "files": files, "manifest": {}},
            eval_scores={
                "fingerprint": site.fingerprints["v2"].to_dict(),
                "adapter_files": {**files, "adapters.safetensors": "0" * 64},
            },
            waterdeep=site.waterdeep,
            model_server=site.server,
            adapter_deployment=AdapterDeploymentResource(deploy_dir=str(site.deploy_dir)),
            adapter_repo=site.adapter_repo,
            mlflow_tracking=None,
        )
    assert "release v2 is not the adapter eval_scores evaluated" in failure.value.description
    assert "adapters.safetensors" in failure.value.description
    assert site.links().latest == "v1"


def test_an_adapter_for_another_base_shape_is_rolled_back(v1_deployed: Site):
    site = v1_deployed
    before = site.links()

    message = _failed_deploy(site, "v-shape")

    assert "Rolled back" in message and "verified" in message, message
    assert site.links() == before
    assert site.served() == trimmed(site.fingerprints["v1"].adapter)


def test_a_server_that_never_becomes_ready_is_rolled_back_within_the_deadline(
    v1_deployed: Site,
):
    site = v1_deployed
    started = time.monotonic()

    message = _failed_deploy(site, "v-hang")

    elapsed = time.monotonic() - started
    assert f"not ready within {READY_TIMEOUT:g} s" in message, message
    assert "verified" in message
    # One wait for the hanging server, one restart of the old adapter; not an open-ended wait.
    assert elapsed < 2 * READY_TIMEOUT + 30
    assert site.links().latest == "v1"
    assert site.served() == trimmed(site.fingerprints["v1"].adapter)


def test_pruning_keeps_the_deployed_and_previous_versions(v1_deployed: Site):
    site = v1_deployed
    site.deploy("v2", keep=1)
    assert site.links() == Links("v2", "v1")
    deploy = DeployDir(site.deploy_dir)
    installed = deploy.installed_versions()
    # keep=1 keeps the newest install; the deployed and the previous stay whatever their age.
    assert set(installed) == {"v1", "v2", installed[-1]}


def test_the_curl_command_talks_to_the_server_with_a_key_it_does_not_show(v1_deployed: Site):
    import subprocess

    server = v1_deployed.server
    command = curl_command(server.url(), str(server.keys_path()))
    assert server.pipeline_key() not in command
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert requests.get(f"{server.url()}/v1/models", timeout=5).status_code == 401


def test_an_adapter_without_a_fingerprint_is_not_deployed(v1_deployed: Site):
    site = v1_deployed
    pid = site.server.status().pid

    message = _failed_deploy(site, "v3", fingerprint=False)

    assert "no fingerprint" in message and "rematerialize eval_scores" in message
    assert site.links().latest == "v1" and site.server.status().pid == pid
