"""Command line: `python -m refserver --model NAME --version TAG --port N [options]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from refserver.app import ServerConfig, create_app
from refserver.faults import FaultError, Faults

log = logging.getLogger("refserver")


def _faults_arg(text: str) -> Faults:
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of fault fields")
    if spec.get("crash"):
        raise argparse.ArgumentTypeError("'crash' cannot be set at start-up; POST it to /faults")
    try:
        return Faults().merged(spec)
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m refserver",
        description="Reference model server (Open Inference Protocol v2) with fault injection.",
    )
    parser.add_argument("--model", required=True, help="model name served under /v2/models/{name}")
    parser.add_argument("--version", required=True, help="version tag (x-model-version header, metric label)")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=0, help="seeds training and every injected fault")
    parser.add_argument("--start-unloaded", action="store_true", help="wait for POST .../load before serving")
    parser.add_argument("--load-delay-s", type=_non_negative, default=0.0, help="simulated warm-up time of every load")
    parser.add_argument(
        "--faults",
        type=_faults_arg,
        default=Faults(),
        help="initial faults as JSON, e.g. '{\"error_rate\": 0.1}'",
    )
    parser.add_argument("--outcome-memory", type=int, default=100_000, help="responses remembered for late labels")
    parser.add_argument(
        "--memory-limit-mb",
        type=_positive,
        default=None,
        help="die with exit code 137 (like an OOM kill) when resident memory would exceed this (RLIMIT_AS)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (costly under load)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = ServerConfig(
        model_name=args.model,
        version=args.version,
        seed=args.seed,
        start_unloaded=args.start_unloaded,
        load_delay_s=args.load_delay_s,
        faults=args.faults,
        outcome_memory=args.outcome_memory,
        memory_limit_mb=args.memory_limit_mb,
    )
    runner = web.AppRunner(create_app(config), access_log=log if args.access_log else None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        log.info("serving model %s version %s on http://%s:%d", args.model, args.version, args.host, args.port)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s refserver[{args.model}/{args.version}] %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
