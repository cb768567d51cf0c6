"""`python -m orchestray.emulator`: the same server as `orchestray emulate`, without the CLI."""

import argparse

from . import add_arguments, options_from_args, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestray.emulator", description=__doc__)
    add_arguments(parser)
    serve(options_from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
