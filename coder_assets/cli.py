"""The `coder-assets` command."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coder_assets.resources.service import ModelServerResource


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coder-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="create the sample repos and materialize the whole graph (make demo)"
    )
    demo.add_argument(
        "--until",
        choices=("repos", "dataset", "training"),
        default="training",
        help="stop after this stage (default: the whole graph)",
    )
    sample = commands.add_parser("sample-repos", help="create the sample repositories")
    sample.add_argument("root", type=Path, help="folder to create them in")
    _add_server_parser(commands)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from coder_assets.demo.run import main as demo_main

        return demo_main(args.until)
    if args.command == "sample-repos":
        from coder_assets.demo.sample_repos import create_sample_repos

        for path in create_sample_repos(args.root):
            print(path)
        return 0
    if args.command == "server":
        return _server(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _add_server_parser(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser(
        "server",
        help="the model server (mlx_lm.server): its launchd agent, status, start, stop",
        description=(
            "The model server as the pipeline sees it: CODER_ASSETS_SERVER_KIND (managed or "
            "launchd), CODER_ASSETS_SERVER_HOST/_PORT, CODER_ASSETS_BASE_MODEL and "
            "CODER_ASSETS_DEPLOY_DIR (its latest link is the adapter)."
        ),
    )
    actions = server.add_subparsers(dest="action", required=True)
    plist = actions.add_parser(
        "plist", help="print the launchd agent's plist for the current settings"
    )
    plist.add_argument(
        "--proxy", action="store_true", help="the plist of the proxy's agent (Caddy) instead"
    )
    install = actions.add_parser(
        "install",
        help="write the launchd agent's plist to ~/Library/LaunchAgents and start it (macOS)",
    )
    install.add_argument(
        "--dry-run",
        action="store_true",
        help="print the path, the plist and the launchctl commands instead of running them",
    )
    start = actions.add_parser("start", help="start the server and wait until it serves the model")
    for action in (install, start):
        action.add_argument(
            "--no-wait", action="store_true", help="return without waiting for the model"
        )
    actions.add_parser("status", help="the server's desired state and whether it runs")
    stop = actions.add_parser(
        "stop", help="stop the server (launchd: unload the agent) and keep it stopped"
    )
    restart = actions.add_parser(
        "restart", help="restart the server (serves the `latest` adapter) and wait until ready"
    )
    keys = actions.add_parser(
        "keys",
        help="the proxy's API keys: add NAME (prints the key once), revoke NAME, list (names)",
        description="Every request to the model server needs `Authorization: Bearer <key>`. "
        "Keys live in the keys file on waterdeep (mode 600); adding or revoking one reloads the "
        "proxy, the model keeps running.",
    )
    key_actions = keys.add_subparsers(dest="keys_action", required=True)
    for name, text in (("add", "add a key and print it (once)"), ("revoke", "revoke a key")):
        key_actions.add_parser(name, help=text).add_argument(
            "name", help="who or what uses the key, e.g. laptop-alice"
        )
    key_actions.add_parser("list", help="the names of the keys (never the keys)")
    for action in (start, stop, restart):
        action.add_argument(
            "--force",
            action="store_true",
            help="act even while the waterdeep lock is held (training, evaluating, deploying); "
            "logged. The trainer and the server may not fit in memory together",
        )


def _server(args: argparse.Namespace) -> int:
    """`coder-assets server ACTION`: 0 when done, 1 with the reason on stderr."""
    from coder_assets.core.errors import CoderAssetsError

    try:
        server = _model_server()
    except (CoderAssetsError, ValueError) as exc:
        print(
            f"coder-assets server {args.action}: cannot configure the model server from the "
            f"CODER_ASSETS_SERVER_* and CODER_ASSETS_BASE_MODEL settings: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        return _server_action(server, args)
    except CoderAssetsError as exc:
        print(f"coder-assets server {args.action}: {exc}", file=sys.stderr)
        return 1


def _model_server() -> ModelServerResource:
    # Imported here: the resources import Dagster, which `coder-assets --help` need not load.
    from coder_assets.resources import build_base_model, build_model_server

    return build_model_server(build_base_model())


def _on_macos() -> bool:
    return sys.platform == "darwin"


def _warn_binding(server: ModelServerResource) -> None:
    from coder_assets.core.deployment.launchd import binding_warning

    warning = binding_warning(server.host, server.port)
    if warning:
        print(warning, file=sys.stderr)


def _server_action(server: ModelServerResource, args: argparse.Namespace) -> int:
    action = args.action
    if action in ("plist", "install", "start", "restart"):
        _warn_binding(server)
    if action == "plist":
        print(server.render_proxy_plist() if args.proxy else server.render_plist(), end="")
        return 0
    if action == "keys":
        return _keys(server, args)
    if action == "install":
        return _install(server, dry_run=args.dry_run, wait=not args.no_wait)
    if action == "status":
        desired = server.desired_state().describe()
        print(
            f"{server.kind} model server at {server.url()}: desired {desired}; actual "
            f"{server.status().detail}"
        )
        return 0
    from coder_assets.core.deployment.host import WaterdeepBusyError

    try:
        lock = _take_waterdeep_lock(server, action, force=args.force)
    except WaterdeepBusyError as exc:
        print(
            f"coder-assets server {action}: refused: {exc}. `coder-assets server {action} "
            "--force` acts anyway (the trainer and the server may not fit in memory together)",
            file=sys.stderr,
        )
        return 1
    try:
        return _lifecycle(server, args)
    finally:
        if lock is not None:
            lock.release()


def _keys(server: ModelServerResource, args: argparse.Namespace) -> int:
    """`coder-assets server keys add|revoke|list`: no waterdeep lock, the model is not touched."""
    from coder_assets.core.deployment.proxy import add_key, read_keys, revoke_key

    path = server.keys_path()
    server.proxy_dir().mkdir(parents=True, exist_ok=True)
    if args.keys_action == "list":
        keys = read_keys(path)
        for key in keys:
            print(key.name)
        if not keys:
            print(f"no keys in {path}: add one with `coder-assets server keys add NAME`")
        return 0
    if args.keys_action == "add":
        key = add_key(path, args.name)
    else:
        revoke_key(path, args.name)
    reloaded = server.reload_proxy()
    state = "the proxy reloaded" if reloaded else "the proxy reads it when it starts"
    if args.keys_action == "add":
        print(
            f"added key {key.name!r} to {path} ({state}). The key, shown only now:\n{key.key}",
        )
    else:
        print(f"revoked key {args.name!r} in {path} ({state})")
    return 0


def _take_waterdeep_lock(server: ModelServerResource, action: str, *, force: bool):
    """The waterdeep lock for `server ACTION`, or WaterdeepBusyError naming its holder; with
    `force`, None after logging whom it overrides."""
    from coder_assets.core.deployment.host import WaterdeepBusyError, WaterdeepLock
    from coder_assets.resources import waterdeep_lock_file

    lock = WaterdeepLock(Path(waterdeep_lock_file()), purpose=f"coder-assets server {action}")
    try:
        lock.acquire()
    except WaterdeepBusyError as exc:
        if not force:
            raise
        _log_operator(server, f"server {action} --force overrode the waterdeep lock: {exc}")
        return None
    if lock.cleared_stale:
        _log_operator(
            server, f"server {action} cleared a stale waterdeep lock: {lock.cleared_stale}"
        )
    return lock


def _log_operator(server: ModelServerResource, message: str) -> None:
    """A warning on stderr, kept in the server's operator.log in its state dir too."""
    from datetime import UTC, datetime

    print(f"coder-assets: warning: {message}", file=sys.stderr)
    server.state_path().mkdir(parents=True, exist_ok=True)
    with open(server.state_path() / "operator.log", "a", encoding="utf-8") as log:
        log.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}\n")


def _lifecycle(server: ModelServerResource, args: argparse.Namespace) -> int:
    from coder_assets.resources.service import SERVING, STOPPED

    action = args.action
    by = f"coder-assets server {action}" + (" --force" if args.force else "")
    if action == "stop":
        before = server.status()
        server.set_desired_state(STOPPED, by)
        server.stop()
        what = f"stopped (was {before.detail})" if before.running else "was not running"
        print(f"{server.kind} model server at {server.url()}: {what}; desired stopped")
        return 0
    server.set_desired_state(SERVING, by)
    if action == "restart":
        server.restart()  # waits until the model is served
    else:
        server.start()
        if not args.no_wait:
            server.wait_ready()
    print(f"{server.kind} model server at {server.url()}: {server.status().detail}")
    return 0


def _install(server: ModelServerResource, *, dry_run: bool, wait: bool) -> int:
    from coder_assets.core.deployment.launchd import plist_differs

    path = server.plist_path()
    if dry_run:
        text = server.render_plist()
        changed = plist_differs(path, text)
        loaded = _on_macos() and server.kind == "launchd" and server._launchd_loaded()
        state = "would be written" if changed else "is up to date"
        print(f"# {path} {state}:")
        print(text, end="")
        proxy_path, proxy_text = server.proxy_plist_path(), server.render_proxy_plist()
        proxy_state = (
            "would be written" if plist_differs(proxy_path, proxy_text) else "is up to date"
        )
        print(f"# {proxy_path} {proxy_state}:")
        print(proxy_text, end="")
        assumed = "" if _on_macos() else " (on macOS, with the agent not loaded yet)"
        print(f"# launchctl commands{assumed}:")
        for command in server.install_commands(loaded=loaded, changed=changed):
            print(shlex.join(command))
        return 0
    if not _on_macos():
        print(
            f"coder-assets server install: launchd agents exist only on macOS, not on "
            f"{sys.platform}. Run `coder-assets server install --dry-run` to see the plist and "
            "the launchctl commands, or use CODER_ASSETS_SERVER_KIND=managed (the default) to "
            "run the server as a managed process with `coder-assets server start`.",
            file=sys.stderr,
        )
        return 1
    if server.kind != "launchd":
        print(
            f"coder-assets server install: CODER_ASSETS_SERVER_KIND is {server.kind!r}, so the "
            "pipeline would not drive the launchd agent (and would start a second server on "
            f"port {server.port}): set CODER_ASSETS_SERVER_KIND=launchd and run it again.",
            file=sys.stderr,
        )
        return 1
    model = server.model_dir()
    if not (model / "config.json").is_file():
        print(
            f"coder-assets server install: the model directory {model} has no config.json: set "
            "CODER_ASSETS_BASE_MODEL to the MLX model directory the server should load.",
            file=sys.stderr,
        )
        return 1
    changed = server.ensure_plist()
    print(f"{'wrote' if changed else 'unchanged'}: {path}")
    server.start()
    if wait:
        server.wait_ready()
    print(f"launchd model server at {server.url()}: {server.status().detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
