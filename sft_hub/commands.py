"""Command-line pieces kept out of ``cli.py``: ``-q`` / ``-v`` flags, ``sft-hub recipes
list|show|copy`` and ``sft-hub schema``. Each calls a public function (``sft_hub.shipped``,
``sft_hub.json_schema``)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import console
from .json_schema import schema_text
from .shipped import catalog, copy_shipped, find, format_list


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print errors and the final summary only")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="also print the libraries' warnings and every metric (-vv: their info)")


def configure_console(args: argparse.Namespace) -> None:
    console.configure(console.verbosity_from_flags(bool(getattr(args, "quiet", False)),
                                                   getattr(args, "verbose", 0) or 0))


def add_commands(sub) -> None:
    r = sub.add_parser("recipes", help="the recipes and accelerate configs shipped with sft-hub: "
                       "list, show, copy")
    rs = r.add_subparsers(dest="recipes_command", required=True, metavar="ACTION")
    ls = rs.add_parser("list", help="every shipped recipe and accelerate config")
    ls.set_defaults(func=_list)
    sh = rs.add_parser("show", help="print a shipped recipe or config")
    sh.add_argument("name", help="e.g. quickstart/sms-spam-minilm-full or accelerate/multi_gpu")
    sh.set_defaults(func=_show)
    cp = rs.add_parser("copy", help="copy a shipped recipe (with the data and weights it reads "
                       "from beside itself) or config, to edit and train")
    cp.add_argument("name", help="e.g. sms-spam-minilm-full or accelerate/multi_gpu")
    cp.add_argument("dest", nargs="?", default=".",
                    help="directory, or a .yaml file name (default: the current directory)")
    cp.add_argument("--force", action="store_true", help="replace files that exist")
    cp.set_defaults(func=_copy)

    s = sub.add_parser("schema", help="write the recipe JSON Schema (for editors: "
                       "`# yaml-language-server: $schema=<file>`)")
    s.add_argument("-o", "--output", help="write to this file (default: standard output)")
    s.set_defaults(func=_schema)


def _list(args) -> int:
    print(format_list(catalog()), flush=True)
    return 0


def _show(args) -> int:
    item = find(args.name)
    print(f"# {item.kind}: {item.name} ({item.path})", file=sys.stderr)
    print(item.path.read_text(encoding="utf-8").rstrip("\n"), flush=True)
    return 0


def _copy(args) -> int:
    written = copy_shipped(args.name, args.dest, force=args.force)
    item = find(args.name)
    first = written[0]
    print(f"copied {item.name} to {first}" + (f" (with {', '.join(str(p) for p in written[1:])})"
                                              if written[1:] else ""))
    if item.kind == "recipe":
        print(f"next: sft-hub validate {first} && sft-hub train {first}")
    else:
        print(f"next: accelerate launch --config_file {first} -m sft_hub train <recipe>")
    return 0


def _schema(args) -> int:
    text = schema_text()
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
