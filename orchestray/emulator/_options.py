"""The emulator's settings, and their command-line form."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, fields, replace

from ._quota import LIMIT_MODES

__all__ = ["EmulatorOptions", "add_arguments", "options_from_args", "options_to_args", "API_KEY_ENV"]

# The key travels by environment, not argv, so it never shows in a process listing.
API_KEY_ENV = "ORCHESTRAY_EMULATOR_API_KEY"


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """How the emulator behaves. None for `rpm`/`tpm` means unlimited.

    `latency_ms` (with `latency_sigma` and `ms_per_output_token`) overrides every model's own
    latency so a benchmark controls it; 0 means no sleep at all, None keeps each profile's latency.
    `accuracy` is the profile of a model name that is not one of `DEFAULT_PROFILES`.
    A hang lasts `hang_s` unless the client gives up first. Anthropic models named in
    `reject_sampling` ("*" for all) answer 400 to temperature, top_p and top_k, as Anthropic's
    newest models do.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read it back from the base URL
    rpm: int | None = None
    tpm: int | None = None
    limit_mode: str = "bucket"  # how rpm/tpm are counted: sliding | fixed | bucket (see _quota)
    latency_ms: float | None = 0.0
    latency_sigma: float = 0.0
    ms_per_output_token: float = 0.0
    accuracy: float = 0.8
    fault_rate: float = 0.0
    hang_rate: float = 0.0
    error_status: int | None = None
    hang_s: float = 300.0
    seed: int = 0
    api_key: str | None = None
    reject_sampling: tuple[str, ...] = ()
    # For tests of what leaves a client: the last `keep_requests` request bodies, at GET /requests.
    keep_requests: int = 0
    # The next `broken_json` answers to a JSON response_format are cut in half (invalid JSON), as a
    # model that loses its way does; set again through /config.
    broken_json: int = 0
    key_rpm: tuple[tuple[str, int], ...] = ()  # keys with a quota of their own (see _keys)
    log_arrivals: bool = False  # keep every call's arrival for GET /arrivals
    # The batch APIs (see _batches): how long a batch takes, what share of its requests expire or
    # error, caps per batch (None: the providers' own), and requests that may wait at once.
    batch_turnaround_s: float = 2.0
    batch_expire_rate: float = 0.0
    batch_error_rate: float = 0.0
    batch_fault_models: tuple[str, ...] = ()  # the models those two rates touch (empty: every model)
    batch_max_requests: int | None = None
    batch_max_bytes: int | None = None
    batch_queue_requests: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for unlimited), got {value}")
        if self.limit_mode not in LIMIT_MODES:
            raise ValueError(f"limit_mode must be one of {', '.join(LIMIT_MODES)}, got {self.limit_mode!r}")
        for name in ("fault_rate", "hang_rate", "accuracy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if not 0.0 <= self.batch_expire_rate + self.batch_error_rate <= 1.0 or min(self.batch_expire_rate, self.batch_error_rate) < 0:
            raise ValueError("batch_expire_rate and batch_error_rate must be within 0..1 together")
        if self.batch_turnaround_s < 0:
            raise ValueError(f"batch_turnaround_s must be >= 0, got {self.batch_turnaround_s}")
        for name in ("batch_max_requests", "batch_max_bytes", "batch_queue_requests"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None), got {value}")
        if self.fault_rate + self.hang_rate > 1.0:
            raise ValueError("fault_rate + hang_rate must not exceed 1")
        if self.latency_ms is not None and self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if self.latency_sigma < 0 or self.ms_per_output_token < 0 or self.hang_s < 0:
            raise ValueError("latency_sigma, ms_per_output_token and hang_s must be >= 0")
        if self.keep_requests < 0 or self.broken_json < 0:
            raise ValueError("keep_requests and broken_json must be >= 0")
        for key, limit in self.key_rpm:
            if not key or limit <= 0:
                raise ValueError(f"key_rpm needs a key and a positive limit, got {key!r}={limit}")
        if self.error_status is not None and not 400 <= self.error_status <= 599:
            raise ValueError(f"error_status must be an HTTP error status, got {self.error_status}")

    def with_changes(self, **changes) -> EmulatorOptions:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown emulator option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def public(self) -> dict:
        """The settings as JSON, with the API key masked."""
        shown = asdict(self)
        if shown["api_key"]:
            shown["api_key"] = "[set]"
        return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to `parser` (the `orchestray emulate` subcommand)."""
    default = EmulatorOptions()
    add = parser.add_argument
    add("--host", default=default.host, help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8000, help="port, 0 for any free one (default: %(default)s)")
    add("--rpm", type=int, default=None, help="requests per minute per model, enforced per second")
    add("--tpm", type=int, default=None, help="tokens per minute per model, enforced per second")
    add(
        "--limit-mode",
        choices=LIMIT_MODES,
        default=default.limit_mode,
        help="how the per-second limits count: a sliding 1 s window, calendar seconds, or a token bucket "
        "(default: %(default)s)",
    )
    add(
        "--latency-ms",
        type=float,
        default=default.latency_ms,
        help="median latency for every model; 0 answers at once (default: %(default)s)",
    )
    add(
        "--profile-latency",
        action="store_true",
        help="use each simulated model's own latency instead of --latency-ms",
    )
    add("--latency-sigma", type=float, default=default.latency_sigma, help="lognormal sigma")
    add("--ms-per-output-token", type=float, default=default.ms_per_output_token)
    add("--accuracy", type=float, default=default.accuracy, help="accuracy of unknown model names")
    add("--fault-rate", type=float, default=default.fault_rate, help="fraction answered 5xx")
    add("--hang-rate", type=float, default=default.hang_rate, help="fraction never answered")
    add("--error-status", type=int, default=None, help="status of faults (default: mixed 5xx)")
    add("--hang-s", type=float, default=default.hang_s, help="how long a hang lasts at most")
    add("--seed", type=int, default=default.seed)
    add(
        "--reject-sampling",
        action="append",
        default=[],
        metavar="MODEL",
        help="this Anthropic model answers 400 \"`temperature` is deprecated for this model\" to "
        "temperature/top_p/top_k, as Anthropic's newest do; repeatable, '*' for every model",
    )
    add("--batch-turnaround-s", type=float, default=default.batch_turnaround_s,
        help="how long a provider batch takes to end (default: %(default)s)")
    add("--batch-expire-rate", type=float, default=0.0, help="fraction of batch requests that come back expired")
    add("--batch-error-rate", type=float, default=0.0, help="fraction of batch requests that come back errored (500)")
    add("--batch-fault-model", action="append", default=[], metavar="MODEL", dest="batch_fault_models",
        help="only this model's batch requests expire or error at those rates; repeatable (default: every model)")
    add("--batch-max-requests", type=int, default=None, help="requests per batch at most (default: the provider's)")
    add("--batch-max-bytes", type=int, default=None, help="bytes per batch at most (default: the provider's)")
    add("--batch-queue-requests", type=int, default=None, help="requests that may wait in unended batches at once")
    add(
        "--key-rpm",
        action="append",
        default=[],
        type=_key_rpm,
        metavar="KEY=RPM",
        help="calls with this API key get a requests-per-minute quota of their own (a test key: it "
        "shows in the process listing); repeatable",
    )
    add("--log-arrivals", action="store_true", help="keep every call's arrival time for GET /arrivals")
    add(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require this key (Bearer / x-api-key); default: ${API_KEY_ENV} if set",
    )


def options_from_args(args: argparse.Namespace) -> EmulatorOptions:
    return EmulatorOptions(
        host=args.host,
        port=args.port,
        rpm=args.rpm,
        tpm=args.tpm,
        limit_mode=args.limit_mode,
        latency_ms=None if args.profile_latency else args.latency_ms,
        latency_sigma=args.latency_sigma,
        ms_per_output_token=args.ms_per_output_token,
        accuracy=args.accuracy,
        fault_rate=args.fault_rate,
        hang_rate=args.hang_rate,
        error_status=args.error_status,
        hang_s=args.hang_s,
        seed=args.seed,
        api_key=args.api_key,
        reject_sampling=tuple(args.reject_sampling),
        key_rpm=tuple(args.key_rpm),
        log_arrivals=args.log_arrivals,
        batch_turnaround_s=args.batch_turnaround_s,
        batch_expire_rate=args.batch_expire_rate,
        batch_error_rate=args.batch_error_rate,
        batch_fault_models=tuple(args.batch_fault_models),
        batch_max_requests=args.batch_max_requests,
        batch_max_bytes=args.batch_max_bytes,
        batch_queue_requests=args.batch_queue_requests,
    )


def _key_rpm(text: str) -> tuple[str, int]:
    key, sep, limit = text.rpartition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=RPM, got {text!r}")
    try:
        return key, int(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=RPM with a whole number, got {text!r}") from None


def options_to_args(options: EmulatorOptions) -> list[str]:
    """The command line that reproduces `options` in another process; the key goes by API_KEY_ENV."""
    args = ["--host", options.host, "--port", str(options.port), "--limit-mode", options.limit_mode]
    if options.latency_ms is None:
        args.append("--profile-latency")
    else:
        args += ["--latency-ms", repr(options.latency_ms)]
    optional = {
        "--rpm": options.rpm,
        "--tpm": options.tpm,
        "--error-status": options.error_status,
        "--batch-max-requests": options.batch_max_requests,
        "--batch-max-bytes": options.batch_max_bytes,
        "--batch-queue-requests": options.batch_queue_requests,
    }
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(value)]
    args += [
        "--latency-sigma", repr(options.latency_sigma),
        "--ms-per-output-token", repr(options.ms_per_output_token),
        "--accuracy", repr(options.accuracy),
        "--fault-rate", repr(options.fault_rate),
        "--hang-rate", repr(options.hang_rate),
        "--hang-s", repr(options.hang_s),
        "--seed", str(options.seed),
        "--batch-turnaround-s", repr(options.batch_turnaround_s),
        "--batch-expire-rate", repr(options.batch_expire_rate),
        "--batch-error-rate", repr(options.batch_error_rate),
    ]  # fmt: skip
    for model in options.reject_sampling:
        args += ["--reject-sampling", model]
    for model in options.batch_fault_models:
        args += ["--batch-fault-model", model]
    for key, limit in options.key_rpm:
        args += ["--key-rpm", f"{key}={limit}"]
    if options.log_arrivals:
        args.append("--log-arrivals")
    return args
