"""The `cx-pipeline` command."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cx-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline once against the bundled demo world and print a summary"
    )
    demo.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="where outputs go (data/demo)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the demo world (42)")
    demo.add_argument("--skus", type=int, default=2000, help="catalog size of the demo world (2000)")

    simulate = commands.add_parser("simulate", help="serve the demo world over HTTP until interrupted")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0 picks a free one)")
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--skus", type=int, default=2000)
    simulate.add_argument("--token", default="demo-token", help="bearer token clients must send (demo-token)")

    args = parser.parse_args(argv)
    # Our own progress at INFO; libraries (GX, alembic) only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cx_pipeline").setLevel(logging.INFO)
    if args.command == "demo":
        from cx_pipeline.demo import run_demo

        return run_demo(args.data_dir, seed=args.seed, skus=args.skus)

    from cx_pipeline.simulator import Simulator, build_world

    sim = Simulator(
        world=build_world(seed=args.seed, n_skus=args.skus), token=args.token, host=args.host, port=args.port
    )
    sim.start()
    print(f"Demo world (seed {args.seed}, {args.skus:,} SKUs) on {sim.url}. Point the pipeline at it with:")
    for system in ("WMS", "CATALOG", "OMS", "HELPDESK"):
        print(f"  export CX_{system}_URL={sim.url} CX_{system}_TOKEN=<the --token value>")
    print("Ctrl-C stops it.", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
