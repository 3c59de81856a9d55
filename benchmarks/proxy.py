"""How much latency the authenticating proxy (Caddy) adds per request to mlx_lm.server.

    .venv/bin/python benchmarks/proxy.py [--requests 100]

Starts the model server with a tiny dev model and its proxy on loopback ports, then sends the
same requests straight to the model (127.0.0.1:model_port) and through the proxy with a key,
interleaved, over keep-alive connections; with --tls also through a second proxy with a
certificate from a throwaway CA. Prints a markdown table for the README: median and 95th
percentile per request, and the median added by the proxy. A refused request (no key) is timed
too: it never reaches the model.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coder_assets.core.training.dev_model import build_dev_model  # noqa: E402
from coder_assets.resources.service import ModelServerResource, port_in_use  # noqa: E402

CORPUS = [f"def f_{i}(x):\n    return x * {i}\n" for i in range(20)] * 10
COMPLETION = {"prompt": "def f(x):\n", "max_tokens": 1, "temperature": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(call: Callable[[], requests.Response], expect: int) -> float:
    began = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - began
    if response.status_code != expect:
        raise SystemExit(f"expected {expect}, got {response.status_code}: {response.text[:200]}")
    return elapsed * 1000


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "1", "-subj", "/CN=bench CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def row(name: str, times: list[float], base: list[float] | None = None) -> str:
    ordered = sorted(times)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    added = "" if base is None else f"{statistics.median(times) - statistics.median(base):+.2f}"
    return f"| {name} | {len(times)} | {statistics.median(times):.2f} | {p95:.2f} | {added} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tls", action="store_true", help="also time a proxy with TLS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        root = Path(tmp)
        model = build_dev_model(root / "model", CORPUS)
        server = ModelServerResource(
            model_path=str(model),
            state_dir=str(root / "server"),
            port=free_port(),
            model_port=free_port(),
        )
        server.start()
        tls_server = None
        try:
            server.wait_ready()
            key = server.pipeline_key()
            direct, proxied = requests.Session(), requests.Session()
            proxied.headers["Authorization"] = f"Bearer {key}"
            kinds: dict[str, tuple[requests.Session, str]] = {
                "direct": (direct, server.model_url()),
                "proxy": (proxied, server.url()),
            }
            if args.tls:
                ca, cert, tls_key = make_pki(root)
                tls_server = ModelServerResource(
                    model_path=str(model),
                    state_dir=str(root / "tls"),
                    port=free_port(),
                    model_port=server.backend_port(),
                    tls_cert=str(cert),
                    tls_key=str(tls_key),
                )
                tls_server.start_proxy()
                deadline = time.monotonic() + 30
                while not port_in_use("127.0.0.1", tls_server.port):
                    if time.monotonic() > deadline:
                        raise SystemExit("the TLS proxy did not start")
                    time.sleep(0.1)
                secure = requests.Session()
                # Set where the environment's REQUESTS_CA_BUNDLE cannot override it.
                secure.trust_env = False
                secure.verify = str(ca)
                secure.headers["Authorization"] = f"Bearer {tls_server.pipeline_key()}"
                kinds["proxy+TLS"] = (secure, tls_server.url())
            times: dict[tuple[str, str], list[float]] = {}
            refused: list[float] = []
            anonymous = requests.Session()
            for _ in range(args.requests):
                for kind, (session, url) in kinds.items():
                    times.setdefault(("GET /v1/models", kind), []).append(
                        timed(lambda s=session, u=url: s.get(f"{u}/v1/models", timeout=30), 200)
                    )
                    times.setdefault(("1-token completion", kind), []).append(
                        timed(
                            lambda s=session, u=url: s.post(
                                f"{u}/v1/completions", json=COMPLETION, timeout=60
                            ),
                            200,
                        )
                    )
                refused.append(
                    timed(
                        lambda: anonymous.post(
                            f"{server.url()}/v1/completions", json=COMPLETION, timeout=30
                        ),
                        401,
                    )
                )
        finally:
            if tls_server is not None:
                tls_server.stop_proxy()
            server.stop()
    print("| request | n | median ms | p95 ms | added by the proxy (median ms) |")  # noqa: T201
    print("|---|---|---|---|---|")  # noqa: T201
    for request in ("GET /v1/models", "1-token completion"):
        base = times[(request, "direct")]
        for kind in kinds:
            label = f"{request}, {kind}"
            print(row(label, times[(request, kind)], None if kind == "direct" else base))  # noqa: T201
    print(row("refused without a key (401 from Caddy)", refused))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
