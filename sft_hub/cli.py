"""The ``sft-hub`` command: parse arguments, call the public API, turn user errors into exit 2.

Kept thin: each subcommand calls a function a Python user can call too.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .errors import SftHubError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sft-hub", description="Fine-tune Hugging Face and timm models "
                                "from YAML recipes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a recipe and its local data without training; "
                       "prints the resolved recipe")
    v.add_argument("recipe", help="recipe file (or hf://org/repo/path.yaml)")
    v.add_argument("overrides", nargs="*", metavar="key.sub=value")
    v.add_argument("--quiet", "-q", action="store_true", help="do not print the resolved recipe")
    v.set_defaults(func=_validate)

    t = sub.add_parser("train", help="fine-tune, evaluate and save (and push) a recipe")
    t.add_argument("recipe", help="recipe file (or hf://org/repo/path.yaml)")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint of the run directory (or this one)")
    t.set_defaults(func=_train)
    return p


def _validate(args) -> int:
    from .validation import validate

    loaded = validate(args.recipe, args.overrides)
    if not args.quiet:
        print(loaded.to_yaml().rstrip("\n"), flush=True)
    print(f"# ok: {args.recipe} is valid", file=sys.stderr)
    return 0


def _train(args) -> int:
    from .training import train

    train(args.recipe, args.overrides, overwrite=args.overwrite, resume=args.resume)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = args.func(args)
    except SftHubError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code
