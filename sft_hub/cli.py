"""The ``sft-hub`` command: parse arguments, call the public API, turn user errors into exit 2.

Kept thin: each subcommand calls a function a Python user can call too.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ._version import __version__
from .advice import learning_rate_warnings, resolved_recipe_yaml
from .commands import add_commands, add_verbosity_flags, configure_console
from .errors import RecipeError, SftHubError
from .export import QUANTIZE_CHOICES, export_run, format_export
from .evaluation import evaluate, headline_table
from .predict import predict, summary
from .hub import PUSH_FORMS, push_run
from .hub_refs import parse_hf_ref, recipe_from_model_repo
from .plan import format_plan, plan
from .sweep import sweep
from .sweep_space import combinations, describe, sweep_plan
from .training import train
from .validation import validate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sft-hub", description="Fine-tune Hugging Face and timm models "
                                "from YAML recipes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    p.add_argument("--version", action="version", version=f"sft-hub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a recipe and its local data without training; "
                       "prints the resolved recipe")
    v.add_argument("recipe", help="recipe file (or hf://org/repo/path.yaml)")
    v.add_argument("overrides", nargs="*", metavar="key.sub=value")
    v.add_argument("--quiet", "-q", action="store_true", help="do not print the resolved recipe")
    v.add_argument("--plan", action="store_true", help="also build the model and print total and "
                   "trainable parameters for the recipe's strategy (no training)")
    v.set_defaults(func=_validate)

    pl = sub.add_parser("plan", help="build the model, apply the strategy and print total and "
                        "trainable parameters, without training")
    pl.add_argument("recipe", help="recipe file (or hf://org/repo/path.yaml)")
    pl.add_argument("overrides", nargs="*", metavar="key.sub=value")
    pl.set_defaults(func=_validate, quiet=True, plan=True)

    x = sub.add_parser("export", help="export a finished run to ONNX (model.onnx, tokenizer or "
                       "image processor, config with id2label, export_info.json), checked "
                       "against PyTorch on validation examples; `sft-hub predict` and `sft-hub "
                       "eval` run the folder with ONNX Runtime, without torch")
    x.add_argument("run_dir", help="directory of a finished `sft-hub train` run")
    x.add_argument("--output", required=True, help="the export folder to write")
    x.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="also write model_int8.onnx "
                   "(ONNX Runtime dynamic quantisation), scored against the float model; "
                   "predict and eval then use it")
    x.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export there")
    x.set_defaults(func=_export)

    t = sub.add_parser("train", help="fine-tune, evaluate and save (and push) a recipe")
    t.add_argument("recipe", nargs="?", help="recipe file (or hf://org/repo/path.yaml[@revision])")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value")
    t.add_argument("--from", dest="from_repo", metavar="hf://ORG/MODEL[@REV]",
                   help="re-run the recipe a model pushed by sft-hub was trained with "
                        "(instead of RECIPE)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint of the run directory (or this one)")
    t.set_defaults(func=_train)
    add_verbosity_flags(t)

    w = sub.add_parser("sweep", help="tune the recipe's sweep: space with Optuna on the validation "
                       "split; each trial is a run in <sweep dir>/trials/<n>")
    w.add_argument("recipe", help="recipe with a sweep: section")
    w.add_argument("overrides", nargs="*", metavar="key.sub=value")
    w.add_argument("--resume", action="store_true", help="continue the sweep (after a crash or "
                   "kill -9: finished trials are kept, interrupted ones run again), or join it as "
                   "another worker")
    w.add_argument("--storage", metavar="URL", help="Optuna storage shared by several workers: a "
                   "database URL (sqlite:///..., postgresql://...) or a journal file on a shared "
                   "filesystem (default: study.journal in the sweep directory)")
    w.set_defaults(func=_sweep)
    add_verbosity_flags(w)

    s = sub.add_parser("push", help="push a finished run directory to the Hub (weights, processor, "
                       "recipe.yaml, model card); settings default to the run's hub: section")
    s.add_argument("run_dir", help="directory of a finished `sft-hub train` run")
    s.add_argument("--repo-id", help="<user or organisation>/<name> (default: hub.repo_id)")
    s.add_argument("--form", choices=PUSH_FORMS,
                   help="what to push (default: hub.push, else model): the model as saved, "
                        "the adapter, the merged model, or both (merged at the root, adapter in "
                        "adapter/)")
    s.add_argument("--revision", help="branch to push to (default: hub.revision, else main)")
    visibility = s.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None,
                            help="create the repository private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false",
                            help="create the repository public")
    s.add_argument("--message", help="commit message")
    s.set_defaults(func=_push)
    add_verbosity_flags(s)
    add_commands(sub)  # recipes list|show|copy, schema (commands.py)

    e = sub.add_parser("eval", help="score a trained model on labelled data (default: the run's "
                       "test split) and write eval/<data>/: metrics, per-class table, confusion "
                       "matrix, calibration, confident mistakes")
    e.add_argument("model", help="run directory, hf://ORG/MODEL[@REV] pushed by sft-hub, or an "
                   "`sft-hub export` folder (ONNX Runtime, no torch; its model_int8.onnx when "
                   "there is one, EXPORT/model.onnx for the float model)")
    e.add_argument("--data", help="labelled file, folder or hf://datasets/ID[/CONFIG] in the "
                   "task's format (default: the run's own split)")
    e.add_argument("--split", default="test", help="the run's split (test or validation), or the "
                   "Hub dataset's split (default: test)")
    e.add_argument("--output-dir", help="where the report goes (default: <run>/eval/<data name>)")
    add_verbosity_flags(e)
    _io_flags(e)
    e.set_defaults(func=_eval)

    r = sub.add_parser("predict", help="label new inputs (table, text file, image folder or Hub "
                       "dataset) and write CSV/JSONL")
    r.add_argument("model", help="run directory, hf://ORG/MODEL[@REV] pushed by sft-hub, or an "
                   "`sft-hub export` folder (ONNX Runtime, no torch; its model_int8.onnx when "
                   "there is one, EXPORT/model.onnx for the float model)")
    r.add_argument("--input", required=True, help="CSV/TSV/JSON/JSONL/Parquet, .txt (one example "
                   "a line), an image folder, a table of image paths, or hf://datasets/ID")
    r.add_argument("--output", required=True, help="predictions file (.csv, .tsv or .jsonl)")
    r.add_argument("--top-k", type=int, default=1, help="also write the k best labels")
    r.add_argument("--split", default="test", help="split of a Hub dataset input")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("--skip-bad", action="store_true", help="skip (and count) rows with an empty "
                   "cell or an unreadable image instead of failing")
    add_verbosity_flags(r)  # -q: no progress bar either
    _io_flags(r)
    r.set_defaults(func=_predict)
    return p


COLUMN_FLAGS = ("text", "text-pair", "label", "image", "tokens", "tags")


def _io_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, help="examples per batch (eval default: the "
                        "recipe's per_device_eval_batch_size; predict: 32)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda when available)")
    for name in COLUMN_FLAGS:
        parser.add_argument(f"--{name}-column", metavar="NAME",
                            help=f"the data's {name} column (default: the run's recipe)")


def _columns(args) -> dict[str, str]:
    return {f"{n.replace('-', '_')}_column": getattr(args, f"{n.replace('-', '_')}_column")
            for n in COLUMN_FLAGS if getattr(args, f"{n.replace('-', '_')}_column")}


def _eval(args) -> int:
    report = evaluate(args.model, args.data, split=args.split, out_dir=args.output_dir,
                      columns=_columns(args), batch_size=args.batch_size, device=args.device)
    print(headline_table(report), flush=True)
    return 0


def _predict(args) -> int:
    result = predict(args.model, args.input, args.output, top_k=args.top_k,
                     batch_size=args.batch_size or 32, device=args.device,
                     overwrite=args.overwrite, skip_bad=args.skip_bad, split=args.split,
                     columns=_columns(args), progress=not args.quiet)
    print(summary(result), flush=True)
    return 0


def _validate(args) -> int:
    loaded = validate(args.recipe, args.overrides)
    if not args.quiet:
        print(resolved_recipe_yaml(loaded).rstrip("\n"), flush=True)  # + strategy defaults
    for warning in learning_rate_warnings(loaded.recipe):
        print(f"# warning: {warning}", file=sys.stderr)
    if args.plan:
        print(format_plan(plan(loaded)), flush=True)
    if loaded.recipe.sweep is not None:
        space = sweep_plan(loaded)
        print(f"# sweep: {space.trials} trials, validation {space.metric} ({space.direction}), "
              f"{len(combinations(space))} combinations of the space checked:\n"
              + describe(space), file=sys.stderr)
    print(f"# ok: {args.recipe} is valid", file=sys.stderr)
    return 0


def _train(args) -> int:
    recipe, overrides = args.recipe, list(args.overrides)
    if args.from_repo:
        recipe, overrides = _recipe_from(args.from_repo, recipe, overrides)
    elif recipe is None:
        raise RecipeError("no recipe given", hint="sft-hub train RECIPE.yaml [key=value ...], or "
                          "sft-hub train --from hf://org/model-repo")
    train(recipe, overrides, overwrite=args.overwrite, resume=args.resume)
    return 0


def _sweep(args) -> int:
    sweep(args.recipe, list(args.overrides), resume=args.resume, storage=args.storage)
    return 0


def _recipe_from(model_repo: str, recipe: Optional[str],
                 overrides: list[str]) -> tuple[str, list[str]]:
    """``train --from hf://org/model``: that repo's recipe.yaml, run in ``runs/<model name>``."""

    if recipe is not None:
        if "=" not in recipe:
            raise RecipeError(f"give a recipe or --from, not both (got {recipe!r} and --from "
                              f"{model_repo})", hint="drop one of them")
        overrides = [recipe, *overrides]  # argparse took the first override for the recipe
    if not any(o.split("=", 1)[0].strip() == "output.dir" for o in overrides):
        overrides.append(f"output.dir=runs/{parse_hf_ref(model_repo).repo_id.split('/')[-1]}")
    return recipe_from_model_repo(model_repo), overrides


def _push(args) -> int:
    push_run(args.run_dir, repo_id=args.repo_id, form=args.form, revision=args.revision,
             private=args.private, commit_message=args.message)
    return 0


def _export(args) -> int:
    result = export_run(args.run_dir, args.output, quantize=args.quantize,
                        overwrite=args.overwrite, opset=args.opset)
    print(format_export(result), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    configure_console(args)  # -q / -v, NO_COLOR, terminal or log file (console.py)
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
