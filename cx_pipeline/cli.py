"""The `cx-pipeline` command."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_APP_DB = "data/app.sqlite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cx-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline once against the bundled demo world and print a summary"
    )
    demo.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="where outputs go (data/demo)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the demo world (42)")
    demo.add_argument("--skus", type=int, help="catalog size of the demo world (2000; 200 with --storefront vendure)")
    demo.add_argument(
        "--storefront",
        choices=("rest", "vendure"),
        default="rest",
        help="rest: the simulator is every system (the default); vendure: a real Vendure shop (needs Node.js 20+ "
        "and npm) is the catalog, the order source and the shop pushed to, the simulator the WMS and the rest",
    )

    simulate = commands.add_parser("simulate", help="serve the demo world over HTTP until interrupted")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0 picks a free one)")
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--skus", type=int, default=2000)
    simulate.add_argument("--token", default="demo-token", help="bearer token clients must send (demo-token)")

    evaluate = commands.add_parser(
        "evaluate-returns", help="measure the return-risk model against a demo world's planted truth"
    )
    evaluate.add_argument("--data-dir", type=Path, default=Path("data/evaluation"), help="(data/evaluation)")
    evaluate.add_argument("--seed", type=int, default=42, help="seed of the world (42)")
    evaluate.add_argument("--skus", type=int, default=20000, help="catalog size (20000)")
    evaluate.add_argument(
        "--history-days", type=int, default=150, help="days of history, 90 of them before the training cutoff (150)"
    )
    evaluate.add_argument(
        "--now",
        type=datetime.fromisoformat,
        default=datetime(2026, 11, 16, 6, tzinfo=UTC),
        help="the world's clock, so that the figures can be reproduced (2026-11-16T06:00:00+00:00)",
    )

    bench = commands.add_parser(
        "bench", help="measure speed and memory on a scale world against the targets (docs/performance.md)"
    )
    bench.add_argument("--skus", type=int, default=1_000_000, help="catalog size of the scale world (1000000)")
    bench.add_argument("--receipt-lines", type=int, help="receipt lines in the scale world (20 per SKU)")
    bench.add_argument(
        "--http-skus", type=int, default=20_000, help="demo world size for HTTP ingest and the executors (20000)"
    )
    bench.add_argument(
        "--only",
        choices=["scale", "http", "executors"],
        help="run one part: the scale runs, HTTP ingest, or in-process against multiprocess execution",
    )
    bench.add_argument("--out", type=Path, default=Path("data/bench"), help="results and scratch files (data/bench)")

    app_db = argparse.ArgumentParser(add_help=False)
    app_db.add_argument(
        "--app-db",
        type=Path,
        default=Path(os.environ.get("CX_APP_DB", DEFAULT_APP_DB)),
        help=f"the review app's store (env CX_APP_DB, else {DEFAULT_APP_DB}; the demo's: data/demo/app.sqlite)",
    )
    serve = commands.add_parser("serve", parents=[app_db], help="run the review web app")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0 picks a free one)")
    serve.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (behind an HTTPS reverse proxy)"
    )
    serve.add_argument(
        "--trusted-proxies",
        default=os.environ.get("CX_TRUSTED_PROXIES", ""),
        help="addresses of reverse proxies whose X-Forwarded-For names the client, comma-separated "
        "(env CX_TRUSTED_PROXIES; none by default: the client is whoever connects)",
    )

    users = commands.add_parser("users", help="manage the review app's users").add_subparsers(
        dest="action", required=True
    )
    add = users.add_parser("add", parents=[app_db], help="create a user (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=("merchandiser", "qa", "admin"))
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (for scripts)")
    passwd = users.add_parser("passwd", parents=[app_db], help="set a user's password (ends their sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    role = users.add_parser("role", parents=[app_db], help="change a user's role")
    role.add_argument("username")
    role.add_argument("role", choices=("merchandiser", "qa", "admin"))
    for action, text in (("disable", "disable a user (ends their sessions)"), ("enable", "re-enable a user")):
        users.add_parser(action, parents=[app_db], help=text).add_argument("username")
    users.add_parser("list", parents=[app_db], help="list users")

    args = parser.parse_args(argv)
    # Our own progress at INFO; libraries (GX, alembic) only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cx_pipeline").setLevel(logging.INFO)
    if args.command == "demo":
        from cx_pipeline.demo import run_demo

        return run_demo(args.data_dir, seed=args.seed, skus=args.skus, storefront=args.storefront)
    if args.command == "evaluate-returns":
        from cx_pipeline.evaluation import evaluate_returns

        return evaluate_returns(args.data_dir, args.seed, args.skus, args.history_days, args.now)
    if args.command == "simulate":
        return simulate_world(args)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "serve":
        return serve_app(args)
    return manage_users(args)


def simulator_exports(url: str, token: str) -> list[str]:
    """The `export` lines that point every system the job talks to (feeds, notifications, the storefront) at
    the simulator: the same settings as `.env.example`."""
    systems = ("WMS", "CATALOG", "OMS", "HELPDESK", "NOTIFY")
    return [f"export CX_{system}_URL={url} CX_{system}_TOKEN={token}" for system in systems] + [
        f"export CX_STOREFRONT_ADAPTER=rest CX_STOREFRONT_URL={url} CX_STOREFRONT_TOKEN={token}"
    ]


def simulate_world(args: argparse.Namespace) -> int:
    from cx_pipeline.simulator import Simulator, build_world

    sim = Simulator(
        world=build_world(seed=args.seed, n_skus=args.skus), token=args.token, host=args.host, port=args.port
    )
    sim.start()
    print(f"Demo world (seed {args.seed}, {args.skus:,} SKUs) on {sim.url}. Point the pipeline at it with:")
    for line in simulator_exports(sim.url, args.token):
        print(f"  {line}")
    print("(or `cp .env.example .env` when it runs on the default port), then: dg dev")
    print("Ctrl-C stops it.", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from cx_pipeline.benchmarks.harness import run
    from cx_pipeline.benchmarks.scale_world import Size

    command = " ".join(["cx-pipeline", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "cx-pipeline bench"
    size = Size(args.skus, args.receipt_lines or 20 * args.skus)
    return run(size, args.http_skus, args.only, args.out, command)


def serve_app(args: argparse.Namespace) -> int:
    import uvicorn

    from cx_pipeline.core import appstore
    from cx_pipeline.web import accounts, create_app

    app = create_app(args.app_db, secure_cookies=args.secure_cookies)
    with appstore.connect(args.app_db) as store:
        if not accounts.has_users(store):
            print(f"No users yet: create one with  cx-pipeline users add NAME --role admin --app-db {args.app_db}")
    # Listen first, so that --port 0 can say which port it got; early connections wait in the backlog.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    print(
        f"Review app on http://{args.host}:{sock.getsockname()[1]} (store {args.app_db}); Ctrl-C stops it.", flush=True
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=args.trusted_proxies,  # "" trusts none (uvicorn's own default trusts 127.0.0.1)
        )
    )
    server.run(sockets=[sock])
    return 0


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("the passwords differ; nothing changed")
    return first


def manage_users(args: argparse.Namespace) -> int:
    from cx_pipeline.core import appstore
    from cx_pipeline.web import accounts

    with appstore.connect(args.app_db) as store:
        try:
            if args.action == "add":
                accounts.add_user(store, args.username, args.role, read_password(args.password_stdin))
                print(f"user {args.username} ({args.role}) added")
            elif args.action == "passwd":
                accounts.set_password(store, args.username, read_password(args.password_stdin))
                print(f"password of {args.username} changed; their sessions ended")
            elif args.action == "role":
                accounts.set_role(store, args.username, args.role)
                print(f"{args.username} is now {args.role}")
            elif args.action in ("disable", "enable"):
                accounts.set_active(store, args.username, args.action == "enable")
                print(f"{args.username} {args.action}d")
            else:
                for user in accounts.list_users(store):
                    state = "active" if user["active"] else "disabled"
                    print(f"{user['username']:<24}{user['role']:<14}{state:<10}since {user['created_at']}")
        except accounts.AccountError as exc:
            print(f"cx-pipeline users {args.action}: {exc}", file=sys.stderr)
            return 2
    return 0
