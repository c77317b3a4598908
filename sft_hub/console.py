"""What sft-hub prints while it trains: a start banner, progress bars, compact metric tables, the
final summary, and how loud the libraries underneath may be.

Verbosity (``-q`` / default / ``-v`` / ``-vv`` on the command line, :func:`configure` in Python):

- ``QUIET``: errors and the final summary only; no progress bars, libraries at error level.
- ``NORMAL``: banner, progress bars, one compact table per evaluation, sft-hub's own warnings and
  the real problems of loading a checkpoint (a head that does not match, weights missing outside
  the head) in one line each. Library messages a user cannot act on (transformers, datasets,
  peft, accelerate, timm, huggingface_hub loggers and their Python warnings) are silenced.
- ``VERBOSE`` (``-v``): the libraries' own warnings too, every metric of an evaluation, the whole
  checkpoint loading report. ``DEBUG`` (``-vv``): the libraries at info level.

Output is plain text when it does not go to a terminal (a log file gets no colours, no cursor
movement, no progress bars: step lines instead), and colourless when ``NO_COLOR`` is set. Only
the main process of a distributed run prints. Tables and the banner are rendered by ``rich``,
progress bars by ``tqdm`` (the bars the libraries already use).
"""
from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

from ._version import __version__
from .distributed import topology
from .models.transformers_backend import LOADING_INFO
from .strategies.layers import unwrap

QUIET, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3
LIBRARIES = ("transformers", "datasets", "peft", "accelerate", "timm", "huggingface_hub", "torch",
             "evaluate", "optuna")
LIBRARY_WARNINGS = r"(transformers|datasets|peft|accelerate|timm|huggingface_hub|torch|evaluate)(\.|$)"
_state = {"level": NORMAL}
log = logging.getLogger("sft_hub")


def level() -> int:
    return _state["level"]


def verbosity_from_flags(quiet: bool = False, verbose: int = 0) -> int:
    """The level for ``-q`` / ``-v`` (counted: ``-vv`` is DEBUG)."""
    if quiet:
        return QUIET
    return min(NORMAL + int(verbose or 0), DEBUG)


def is_main_process() -> bool:
    """True outside a distributed launch and on rank 0 of one (launchers set ``RANK``)."""
    return os.environ.get("RANK", "0") in ("0", "")


def shows(at: int) -> bool:
    """Whether a message of level ``at`` is printed here (never on a non-main process)."""
    return is_main_process() and level() >= at


def interactive(stream=None) -> bool:
    """Progress bars and colours only on a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def colour(stream=None) -> bool:
    return interactive(stream if stream is not None else sys.stdout) and not os.environ.get("NO_COLOR")


def configure(verbosity: int = NORMAL) -> None:
    """Set how much sft-hub and the libraries below it print. Cheap: imports no library; the
    libraries read the environment when imported, :func:`quiet_libraries` adjusts them later."""
    _state["level"] = verbosity
    handler = next((h for h in log.handlers if getattr(h, "_sft_hub", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler._sft_hub = True  # type: ignore[attr-defined]
        handler.setFormatter(_Formatter())
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.ERROR if verbosity <= QUIET or not is_main_process()
                 else logging.DEBUG if verbosity >= DEBUG else logging.INFO)
    library = _library_level(verbosity)
    if not progress_bars() and "huggingface_hub" not in sys.modules:  # e.g. `sft-hub push > log`
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ["TRANSFORMERS_VERBOSITY"] = logging.getLevelName(library).lower()
    os.environ["DATASETS_VERBOSITY"] = logging.getLevelName(library).lower()
    if verbosity < VERBOSE:
        warnings.filterwarnings("ignore", module=LIBRARY_WARNINGS)
    else:
        warnings.filterwarnings("default", module=LIBRARY_WARNINGS)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after configure)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


def _library_level(verbosity: int) -> int:
    if verbosity >= DEBUG:
        return logging.INFO
    if verbosity >= VERBOSE and is_main_process():
        return logging.WARNING
    return logging.ERROR


def quiet_libraries() -> None:
    """Apply the level to the libraries (already imported or not) and switch their progress bars
    off where they would not help: not a terminal, ``-q``, or not the main process."""
    if not any(getattr(h, "_sft_hub", False) for h in log.handlers):
        configure(level())  # called from Python, not the CLI: sft-hub's own messages still print
    library = _library_level(level())
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(library)
    import transformers

    transformers.logging.set_verbosity(library)
    bars = progress_bars()
    import datasets
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if bars else disable_progress_bars)()
    (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()
    (datasets.enable_progress_bars if bars else datasets.disable_progress_bars)()


def progress_bars() -> bool:
    return interactive(sys.stderr) and shows(NORMAL)


# -- rendering -------------------------------------------------------------------------------------

def render(renderable: Any, stream=None) -> str:
    """``renderable`` (a rich Table, Text...) as text for ``stream``: ANSI colours only when the
    stream is a terminal and NO_COLOR is unset; plain characters otherwise."""
    from rich.console import Console

    stream = stream if stream is not None else sys.stdout
    coloured = colour(stream)
    buffer = io.StringIO()
    width = int(os.environ.get("COLUMNS", "100")) if os.environ.get("COLUMNS", "").isdigit() else 100
    if interactive(stream):
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
    console = Console(file=buffer, force_terminal=coloured, no_color=not coloured,
                      color_system="standard" if coloured else None, width=width,
                      highlight=False, emoji=False, soft_wrap=False, legacy_windows=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def emit(text: str, stream=None, *, at: int = NORMAL) -> None:
    """Print ``text`` (already rendered) without breaking a running progress bar."""
    if not shows(at):
        return
    stream = stream if stream is not None else sys.stdout
    try:
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    except ImportError:  # pragma: no cover - tqdm comes with the libraries
        print(text, file=stream)
    stream.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4f}"


def table(columns: list[str], rows: Iterable[list[Any]], title: Optional[str] = None, *,
          text: bool = False):
    """A compact rich Table (numbers right-aligned, 4 decimals; ``text``: every column left,
    one line per row, cut with an ellipsis)."""
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
              show_edge=False)
    for i, col in enumerate(t.columns):
        col.justify = "left" if i == 0 or text else "right"
        if text:
            col.no_wrap, col.overflow = True, "ellipsis"
    rows = [[_fmt(c) if c is not None else "-" for c in row] for row in rows]
    for row in rows:
        t.add_row(*row)
    if text and rows:  # the first column (names) is never cut
        t.columns[0].min_width = max(len(r[0]) for r in rows)
    return t


# -- the banner --------------------------------------------------------------------------------

def weights_source(spec: Any) -> str:
    """Where ``model`` (a recipe's ModelSpec) takes its weights from, in words."""
    if not spec.pretrained:
        return "random initialisation (model.pretrained: false)"
    if spec.path:
        return f"weights from {spec.path}"
    where = "timm's pretrained weights" if spec.backend == "timm" else "the Hub"
    return f"weights from {where}" + (f" (revision {spec.revision})" if spec.revision else "")


def banner_rows(*, recipe_ref: str, loaded: Any, task: Any, params: dict[str, Any],
                data: dict[str, Any], topology: dict[str, Any], args: Any, output: Path,
                work: Optional[Path] = None, resumed_from: Optional[Path] = None
                ) -> list[tuple[str, str]]:
    """The banner's (field, text) rows; :func:`banner` prints them."""
    r = loaded.recipe
    labels = list(getattr(task, "labels", None) or [])
    shown = ", ".join(labels[:6]) + (f", ... ({len(labels) - 6} more)" if len(labels) > 6 else "")
    trainable, total = params.get("trainable", 0), params.get("total", 0)
    percent = params.get("trainable_percent", 100.0 * trainable / max(total, 1))
    sizes = " · ".join(f"{split} {len(ds):,}" for split, ds in data.items())
    processes = topology.get("num_processes", 1)
    engine = topology.get("distributed_type", "NO")
    engine_text = "single process" if processes == 1 else f"{processes} processes, {engine}"
    if topology.get("num_machines", 1) > 1:
        engine_text += f" on {topology['num_machines']} machines"
    precision = topology.get("mixed_precision", "no")
    accumulation = topology.get("gradient_accumulation_steps", 1)
    per_device = topology.get("per_device_train_batch_size", "?")
    effective = topology.get("global_train_batch_size", "?")
    length = (f"{args.max_steps:,} steps" if getattr(args, "max_steps", -1) > 0
              else f"{_fmt(float(args.num_train_epochs)).rstrip('0').rstrip('.')} epoch(s)")
    rows = [
        ("recipe", recipe_ref),
        ("task", f"{task.name}" + (f" ({len(labels)} labels: {shown})" if labels else "")),
        ("model", f"{r.model.name} ({r.model.backend}), {weights_source(r.model)}"),
        ("strategy", f"{r.strategy.name}: {trainable:,} of {total:,} parameters trainable "
                     f"({percent:.2f}%)"),
        ("data", sizes),
        ("device", f"{topology.get('device', '?')}, {engine_text}, mixed precision {precision}"),
        ("batch", f"{effective} effective = {per_device} per device × {processes} process(es) × "
                  f"{accumulation} accumulation step(s); {length}"),
        ("output", str(output) + (f" (trains in {work}, swapped in when complete)"
                                  if work is not None and work != output else "")),
    ]
    if resumed_from is not None:
        rows.append(("resume", f"from {resumed_from}"))
    return rows


def banner(rows: list[tuple[str, str]]) -> None:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, text in rows:
        grid.add_row(name, Text(text))
    title = Text(f"sft-hub {__version__}", style="bold")
    emit(render(title) + "\n" + render(grid))


# -- checkpoint loading ------------------------------------------------------------------------

def _some(keys: Iterable[str], n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def loading_report(model: Any, info: Optional[dict[str, Any]], source: str) -> list[str]:
    """One line per real problem of loading a checkpoint (and, verbose, the rest), from the
    ``output_loading_info`` of ``from_pretrained``. The task head is every module outside the
    backbone (``base_model_prefix``): a new head is expected, weights missing elsewhere are not."""
    if not info:
        return []
    prefix = getattr(model, "base_model_prefix", "") or ""

    def in_head(key: str) -> bool:
        return bool(prefix) and not (key == prefix or key.startswith(prefix + "."))

    missing = set(info.get("missing_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    unexpected = set(info.get("unexpected_keys") or ())
    lines: list[tuple[int, str]] = []
    head_mismatch = [m for m in mismatched if in_head(m[0])]
    body_mismatch = [m for m in mismatched if not in_head(m[0])]
    if head_mismatch:
        key, ckpt, new = sorted(head_mismatch)[0]
        lines.append((NORMAL, f"warning: the checkpoint's head does not match this task "
                              f"({key}: {list(ckpt)} in {source}, {list(new)} here); "
                              f"{len(head_mismatch)} head weight(s) re-initialised"))
    if body_mismatch:
        lines.append((NORMAL, f"warning: {len(body_mismatch)} weight(s) outside the head have "
                              f"another shape in {source} and were re-initialised: "
                              f"{_some(m[0] for m in body_mismatch)}"))
    body_missing = {k for k in missing if not in_head(k)}
    if body_missing:
        lines.append((NORMAL, f"warning: {len(body_missing)} weight(s) outside the head are missing "
                              f"from {source} and start from random values: {_some(body_missing)}"))
    head_missing = missing - body_missing
    if head_missing:
        lines.append((VERBOSE, f"new task head initialised: {_some(head_missing)}"))
    if unexpected:
        lines.append((VERBOSE, f"{len(unexpected)} checkpoint weight(s) unused by this model "
                               f"(e.g. a pretraining head): {_some(unexpected)}"))
    return [text for at, text in lines if level() >= at]


def report_loading(model: Any, info: Optional[dict[str, Any]], source: str) -> None:
    for line in loading_report(model, info, source):
        emit(line, sys.stderr)


def report_model_loading(model: Any, spec: Any) -> None:
    """:func:`report_loading` for a model built by the transformers backend (prepared by a
    strategy or not); silent for models that recorded no loading info (timm, random weights)."""
    base = unwrap(model)
    report_loading(base, getattr(base, LOADING_INFO, None), spec.path or spec.name)


# -- progress and evaluation tables ---------------------------------------------------------------

def _eval_rows(logs: dict[str, Any], headline: Iterable[str]) -> tuple[str, list[str], list]:
    prefix = next((k.split("_", 1)[0] for k in logs if is_evaluation({k: 0})), "eval")
    figures = {k[len(prefix) + 1:]: v for k, v in logs.items()
               if k.startswith(prefix + "_") and isinstance(v, (int, float))
               and not k.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))}
    return prefix, list(figures), [figures[k] for k in figures]


def is_evaluation(logs: dict[str, Any]) -> bool:
    """An evaluation's log (``eval_loss``, ``test_loss``...), not a training step's or the final
    training summary (``train_loss``)."""
    return any(k.endswith("_loss") and k not in ("loss", "train_loss") for k in logs)


def evaluation_table(logs: dict[str, Any], headline: Iterable[str], *, epoch: Any = None,
                     step: Any = None):
    """A compact table of one evaluation: loss and the task's headline metrics (every metric
    at ``-v``, one row per metric)."""
    prefix, names, values = _eval_rows(logs, headline)
    split = "validation" if prefix == "eval" else prefix
    figures = dict(zip(names, values))
    if level() >= VERBOSE:
        from rich.console import Group
        from rich.text import Text

        return Group(Text(f"{split} at epoch {epoch} (step {step})"),
                     table(["metric", split], [[k, v] for k, v in figures.items()]))
    keys = [k for k in ("loss", *headline) if k in figures]
    return table(["split", "epoch", "step", *keys],
                 [[split, epoch, step, *(figures[k] for k in keys)]])


def step_line(logs: dict[str, Any], state: Any) -> str:
    parts = [f"step {state.global_step:,}/{state.max_steps:,}"]
    if logs.get("epoch") is not None:
        parts.append(f"epoch {float(logs['epoch']):.2f}")
    for key in ("loss", "grad_norm", "learning_rate"):
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{key.replace('learning_rate', 'lr')} {_fmt(float(logs[key]))}")
    return "  ".join(parts)


def progress_callback(headline: Iterable[str]):
    """A transformers TrainerCallback: a tqdm bar for training and each evaluation on a terminal
    (plain step lines otherwise) and a compact table per evaluation instead of a dict."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    headline = tuple(headline)

    class ConsoleCallback(TrainerCallback):
        def __init__(self):
            self.training_bar = None
            self.prediction_bar = None
            self.done = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and progress_bars():
                self.training_bar = tqdm(total=state.max_steps, desc="training", unit="step",
                                         dynamic_ncols=True, initial=state.global_step)
            self.done = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if self.training_bar is not None:
                self.training_bar.update(state.global_step - self.done)
            self.done = state.global_step

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if not (state.is_world_process_zero and progress_bars()):
                return
            if self.prediction_bar is None:
                try:
                    total = len(eval_dataloader)
                except TypeError:
                    total = None
                self.prediction_bar = tqdm(total=total, desc="evaluating", unit="batch",
                                           leave=False, dynamic_ncols=True)
            self.prediction_bar.update(1)

        def _close_prediction(self):
            if self.prediction_bar is not None:
                self.prediction_bar.close()
                self.prediction_bar = None

        def on_evaluate(self, args, state, control, **kwargs):
            self._close_prediction()

        def on_predict(self, args, state, control, **kwargs):
            self._close_prediction()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if is_evaluation(logs):
                epoch = logs.get("epoch", state.epoch)
                emit(render(evaluation_table(logs, headline, epoch=f"{float(epoch or 0):.3g}",
                                             step=state.global_step)))
            elif "loss" in logs and self.training_bar is None:
                emit(step_line(logs, state))  # a log file: one plain line per logging step
            elif "loss" in logs:
                self.training_bar.set_postfix_str(step_line(logs, state).split("  ", 1)[-1],
                                                  refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.training_bar is not None:
                self.training_bar.close()
                self.training_bar = None

    return ConsoleCallback()


def attach(trainer: Any, headline: Iterable[str]) -> None:
    """Replace the Trainer's own progress/printer callbacks (dicts, carriage returns in log
    files) with :func:`progress_callback`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(headline))


def start(trainer: Any, *, loaded: Any, task: Any, params: dict[str, Any], data: dict[str, Any],
          place: Any, resumed_from: Optional[Path] = None) -> None:
    """Before training: print the banner (main process) and put the console's progress
    callback on ``trainer``."""
    attach(trainer, task.headline_metrics)
    if not shows(NORMAL):
        return
    splits = {name: data[name] for name in ("train", "validation", "test") if name in data}
    banner(banner_rows(recipe_ref=loaded.path, loaded=loaded, task=task, params=params,
                       data=splits, topology=topology(trainer), args=trainer.args,
                       output=place.final, work=place.work, resumed_from=resumed_from))


# -- the end -----------------------------------------------------------------------------------

def summary(run_dir: Path, metrics: dict[str, dict[str, float]], headline: Iterable[str]) -> None:
    """The final summary (printed at every level, ``-q`` included, on the main process)."""
    headline = tuple(headline)
    splits = [s for s in ("validation", "test") if s in metrics]
    keys = [k for k in ("loss", *headline) if any(k in metrics[s] for s in splits)]
    rows = [[s, *(metrics[s].get(k) for k in keys)] for s in splits]
    text = f"run directory: {run_dir}"
    if rows:
        text = render(table(["split", *keys], rows)) + "\n" + text
    emit(text, at=QUIET)


def note(text: str, *, at: int = NORMAL) -> None:
    """One line of sft-hub's own on stderr (``note: ...``)."""
    emit(f"note: {text}", sys.stderr, at=at)


def size_text(n_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} GB"  # pragma: no cover


def checkpoints_removed(count: int, n_bytes: int) -> None:
    if count:
        note(f"removed {count} intermediate checkpoint(s) of the complete run ({size_text(n_bytes)}); "
             "output.keep_checkpoints: true keeps them")
