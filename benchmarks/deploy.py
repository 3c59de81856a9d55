"""How long releasing and deploying an adapter takes, and how long a rollback keeps the server
away, on the dev model with a real mlx_lm.server on loopback.

    .venv/bin/python benchmarks/deploy.py [--repeats 3]

Prints a markdown table for the README: release to a local bare repository (git LFS and plain
blobs, first time and again), a deploy (install, swap, restart, smoke test), re-deploying the
deployed version, and a rollback after a smoke-test failure (garbled weights). The model load
dominates the restart; on waterdeep the 32B model takes much longer to load, so the figures that
carry over are the overheads around it.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coder_assets.assets.deployment import DeployedAdapterConfig, deployed_adapter  # noqa: E402
from coder_assets.core.deployment.release import ReleaseTarget, release_adapter  # noqa: E402
from coder_assets.core.deployment.smoke import Fingerprint, FingerprintPrompt, outputs  # noqa: E402
from coder_assets.core.evaluation.generation import InProcessGenerator  # noqa: E402
from coder_assets.core.training.adapter_files import sha256_file  # noqa: E402
from coder_assets.core.training.dev_model import build_dev_model, random_lora_adapter  # noqa: E402
from coder_assets.resources import waterdeep_host  # noqa: E402
from coder_assets.resources.deployment import (  # noqa: E402
    AdapterDeploymentResource,
    AdapterReleaseResource,
)
from coder_assets.resources.service import ModelServerResource  # noqa: E402
from coder_assets.resources.waterdeep import WaterdeepResource  # noqa: E402

CORPUS = [f"def f_{i}(x):\n    return x * {i}\n" for i in range(20)] * 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(action, *args) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_dev_model(root / "model", CORPUS)
        prompts = [
            FingerprintPrompt(
                "fim", f"p{i}", f"<|fim_prefix|>def f_{i}(x):\n<|fim_suffix|>\n<|fim_middle|>"
            )
            for i in range(4)
        ]
        base = outputs(InProcessGenerator(model), prompts)
        server = ModelServerResource(
            model_path=str(model),
            state_dir=str(root / "server"),
            port=free_port(),
            adapter_link=str(root / "deployed" / "latest"),
            ready_timeout_seconds=60,
        )
        waterdeep = WaterdeepResource(**waterdeep_host(), lock_file=str(root / "lock"))
        deployment = AdapterDeploymentResource(deploy_dir=str(root / "deployed"), keep_versions=50)
        adapter_repo = AdapterReleaseResource(
            remote=str(root / "releases-deploy.git"),
            work_dir=str(root / "release-work"),
            create_local_remote=True,
            lfs="never",
        )

        def deploy(version: str, source: Path, fingerprint: Fingerprint) -> None:
            files = {
                n: sha256_file(source / n) for n in ("adapters.safetensors", "adapter_config.json")
            }
            with dg.build_asset_context() as context:
                deployed_adapter(
                    context=context,
                    config=DeployedAdapterConfig(),
                    lora_adapter={"version": version, "path": str(source)},
                    adapter_release={
                        "version": version,
                        "tag": version,
                        "files": files,
                        "manifest": {},
                    },
                    eval_scores={"fingerprint": fingerprint.to_dict(), "adapter_files": files},
                    waterdeep=waterdeep,
                    model_server=server,
                    adapter_deployment=deployment,
                    adapter_repo=adapter_repo,
                    mlflow_tracking=None,
                )

        def failing(version: str, source: Path, fingerprint: Fingerprint) -> None:
            try:
                deploy(version, source, fingerprint)
            except dg.Failure:
                return
            raise AssertionError(f"the garbled adapter {version} was not rolled back")

        try:
            for repeat in range(args.repeats):
                for lfs in ("always", "never"):
                    source = random_lora_adapter(model, root / f"a-{lfs}-{repeat}", seed=repeat)
                    manifest = {"adapter_version": f"v{repeat}-{lfs}"}
                    target = ReleaseTarget(
                        remote=str(root / f"releases-{lfs}.git"), lfs=lfs, create_local_remote=True
                    )
                    work = root / f"work-{lfs}"
                    rows.setdefault(
                        f"release ({'git LFS' if lfs == 'always' else 'plain blobs'})", []
                    ).append(timed(release_adapter, source, manifest, target, work))
                    rows.setdefault("release again (already released)", []).append(
                        timed(release_adapter, source, manifest, target, work)
                    )
                source = root / f"a-always-{repeat}"
                fingerprint = Fingerprint(
                    tuple(prompts), base, outputs(InProcessGenerator(model, source), prompts)
                )
                version = f"v{repeat}"
                adapter_repo.release(source, {"adapter_version": version})
                rows.setdefault("deploy (install, swap, restart, smoke test)", []).append(
                    timed(deploy, version, source, fingerprint)
                )
                rows.setdefault("re-deploy the deployed version", []).append(
                    timed(deploy, version, source, fingerprint)
                )
                garbled = root / f"garbled-{repeat}"
                garbled.mkdir()
                (garbled / "adapter_config.json").write_bytes(
                    (source / "adapter_config.json").read_bytes()
                )
                other = random_lora_adapter(model, root / f"other-{repeat}", seed=100 + repeat)
                (garbled / "adapters.safetensors").write_bytes(
                    (other / "adapters.safetensors").read_bytes()
                )
                adapter_repo.release(garbled, {"adapter_version": f"bad{repeat}"})
                rows.setdefault("failed deploy + rollback, verified", []).append(
                    timed(failing, f"bad{repeat}", garbled, fingerprint)
                )
        finally:
            server.stop(timeout=10)
    print("| step | seconds (median) | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )


if __name__ == "__main__":
    main()
