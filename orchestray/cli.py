"""The `orchestray` command: batch jobs, the provider emulator, and a look at the config."""

from __future__ import annotations

import argparse
import sys

from orchestray.errors import OrchestrayError

__all__ = ["main"]


def _batch(args: argparse.Namespace) -> int:
    from orchestray.actors.batch import run_batch_job
    from orchestray.batch import BatchOptions
    from orchestray.batch_report import format_summary, write_summary
    from orchestray.config import load_config

    import os

    config = load_config(args.config, environ=os.environ)
    options = BatchOptions(
        route=args.route,
        retry_errors=args.retry_errors,
        max_in_flight=args.max_in_flight or config.batch.max_in_flight,
        progress=not args.quiet,
        max_cost=args.max_cost,
    )
    if args.provider_batch:
        from orchestray.provider_batch._cli import run_job

        result = run_job(args, config)
        print(f"summary written to {write_summary(result, args.output)}")
        return 0 if result.failed == 0 and result.invalid == 0 else 3
    result = run_batch_job(args.input, args.output, config, options, address=args.address, workers=args.workers)
    print(format_summary(result))
    print(f"summary written to {write_summary(result, args.output)}")
    if result.not_started:
        return 4  # stopped at the budget: the output is partial, a rerun resumes it
    return 0 if result.failed == 0 and result.invalid == 0 else 3


def _emulate(args: argparse.Namespace) -> int:
    from orchestray.emulator import options_from_args, serve

    serve(options_from_args(args))
    return 0


def _models(args: argparse.Namespace) -> int:
    from orchestray.config import load_config

    config = load_config(args.config)
    for p in config.providers:
        limits = p.limits
        print(
            f"{p.name:<20} provider  {p.kind:<10} model={p.model} rpm={limits.rpm or '-'} tpm={limits.tpm or '-'} "
            f"concurrency={limits.max_concurrency or '-'}"
        )
    for name, route in config.routes.items():
        print(f"{name:<20} route     {route.pattern}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from orchestray.emulator import add_arguments as add_emulator_arguments

    parser = argparse.ArgumentParser(prog="orchestray", description="Coordinate many LLMs on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    batch = commands.add_parser(
        "batch",
        help="run a batch job (OpenAI Batch API JSONL in, one record per line out)",
        description="Run every line of INPUT through the provider or route its body.model names. "
        "Re-running the same command resumes: lines already in OUTPUT are skipped.",
    )
    batch.add_argument("input", help="input JSONL, one request a line")
    batch.add_argument("-o", "--output", required=True, help="output JSONL (appended; resumed when it exists)")
    batch.add_argument("--config", help="YAML config (default: the embedded simulated providers)")
    batch.add_argument("--route", help="send every line to this provider or route, whatever body.model says")
    batch.add_argument("--retry-errors", action="store_true", help="run again the lines whose record is an error")
    batch.add_argument("--max-in-flight", type=int, help="requests in flight at once (default from config: 512)")
    batch.add_argument("--workers", type=int, help="batch workers running routes (default: 2 per node)")
    batch.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    batch.add_argument("--max-cost", type=float, metavar="USD",
                       help="stop starting lines once this run has spent USD (in flight finish); a rerun resumes")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--provider-batch", action="store_true",
                       help="through the providers' own batch APIs at their batch price; patterns run as rounds")
    batch.add_argument("--poll-s", type=float, help="--provider-batch: seconds between looks at a batch")
    batch.set_defaults(run=_batch)
    from orchestray.provider_batch._cli import add_batches_command

    add_batches_command(commands)

    emulate = commands.add_parser(
        "emulate",
        help="run the provider emulator (OpenAI and Anthropic wire formats, rate limits, faults)",
    )
    add_emulator_arguments(emulate)
    emulate.set_defaults(run=_emulate)

    models = commands.add_parser("models", help="list the providers and routes of a config")
    models.add_argument("--config", help="YAML config (default: the embedded one)")
    models.set_defaults(run=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except OrchestrayError as err:
        print(f"orchestray: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("orchestray: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
