"""``sft-hub export``: a finished run as an ONNX model that serves without PyTorch.

What :func:`export_run` does, in order:

1. reads the run directory alone: ``run_info.json`` (task, labels, the strategy's declared save
   form), ``recipe.yaml`` (the data and preprocessing the run was trained with) and the weights.
   A plain model (full fine-tuning, a merged adapter, ``save: both``) is loaded with the task's
   Auto class (timm runs: transformers' ``TimmWrapperForImageClassification``); an adapter is
   loaded onto the base model the recipe names and merged into it;
2. exports it with ``torch.onnx.export`` (the dynamo exporter, the TorchScript one as a fallback)
   with a dynamic batch axis, and a dynamic sequence axis for token inputs; the graph has one
   output, ``logits``;
3. checks parity on 32 real examples of the run's validation split, preprocessed as in training:
   the largest |logit difference| between ONNX Runtime and PyTorch is printed and recorded, and
   a float export above 1e-4 fails;
4. checks that the torch-free preprocessing recorded in the folder (``tokenizer.json`` through the
   ``tokenizers`` library, or the image steps run with PIL and numpy; see
   :mod:`sft_hub.onnx_predictor`) reproduces the run's preprocessing on the same examples;
5. scores the ONNX model on the whole validation split with the task's own metrics; with
   ``quantize="int8"`` also an int8 copy (ONNX Runtime dynamic quantisation), and the agreement
   of the two models' predictions;
6. writes everything into a hidden sibling folder and renames it into place at the end, so a
   failure never leaves a partial export (``--overwrite`` replaces only an earlier export).

The export folder holds ``model.onnx`` (and ``model_int8.onnx``), the tokenizer or image processor,
``config.json`` with ``id2label``, and ``export_info.json``: source run, opset, library versions,
parity figures, validation metrics, and the preprocessing the predictor applies.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ._version import __version__
from .catalog import load_recipe
from .errors import DataError, RunDirError, SftHubError
from .export_preprocessing import check_preprocessing, preprocessing_spec
from .onnx_predictor import (EXPORT_EXTRA_HINT, EXPORT_INFO, INT8_FILE, MODEL_FILE,
                             PREPROCESSING_VERSION, RECIPE_FILE, EvalPrediction)
from .run_dir import RUN_INFO, is_complete
from .tasks import get_task_class

PARITY_EXAMPLES = 32
PARITY_TOLERANCE = 1e-4
QUANTIZE_CHOICES = ("int8",)
EXPORT_LIBRARIES = ("onnx", "onnxruntime", "onnxscript")
BUILDING_SUFFIX, OLD_SUFFIX = ".sft-hub-export", ".sft-hub-export-old"


class ExportError(SftHubError):
    """The model cannot be exported, or its export does not reproduce the PyTorch model."""


@dataclass
class ExportResult:
    output: Path
    info: dict[str, Any]


def require_export_libraries() -> None:
    """ExportError naming the extra to install when an exporter library is missing."""
    import importlib.util

    missing = [name for name in EXPORT_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting to ONNX needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed",
                          hint=EXPORT_EXTRA_HINT)


# -- the output folder ------------------------------------------------------------------------------

def is_export_dir(path: Path) -> bool:
    return path.is_dir() and (path / EXPORT_INFO).is_file()


def check_output(output: Path, run_dir: Path, *, overwrite: bool) -> None:
    """Refuse an output that would lose work: someone else's folder, the run itself, a link."""
    if output.is_symlink():
        raise RunDirError(f"{output} is a symbolic link; sft-hub does not replace links",
                          field="--output", hint="give the real directory")
    if output.exists() and not output.is_dir():
        raise RunDirError(f"{output} is a file", field="--output", hint="choose another folder")
    resolved = output.resolve()
    if resolved == run_dir.resolve() or run_dir.resolve() in resolved.parents:
        raise RunDirError("the export folder must not be the run directory or inside it",
                          field="--output", hint="e.g. --output exports/<name>")
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise RunDirError(f"{output} is the current directory or one of its parents",
                          field="--output", hint="e.g. --output exports/<name>")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not is_export_dir(output):
        raise RunDirError(f"{output} is not empty and is not an sft-hub export (it has no "
                          f"{EXPORT_INFO}); sft-hub never writes into or deletes other folders",
                          field="--output", hint="choose a new or empty folder")
    if not overwrite:
        raise RunDirError(f"{output} already holds an export; refusing to overwrite it",
                          field="--output", hint="pass --overwrite to replace it once the new "
                          "export is complete, or choose another folder")


def _sibling(output: Path, suffix: str) -> Path:
    return output.parent / f".{output.name}{suffix}"


def _put_in_place(building: Path, output: Path) -> None:
    """Move the finished export into place; an earlier export is removed only after that."""
    if output.is_dir() and any(output.iterdir()):
        aside = _sibling(output, OLD_SUFFIX)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(output, aside)
        os.replace(building, output)
        shutil.rmtree(aside)
    else:
        if output.is_dir():
            output.rmdir()
        os.replace(building, output)


# -- the run ------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    run_dir: Path
    run_info: dict[str, Any]
    task: Any
    model: Any          # the torch model, in eval mode, float32
    validation: Any     # the raw validation split (labels encoded)
    source: str         # how the weights were loaded, in words
    loaded: Any         # the run's recipe (LoadedRecipe)

    def recipe_yaml(self, folder: Path) -> str:
        """The run's recipe with its paths relative to ``folder`` (where the export will be)."""
        return self.loaded.to_yaml(relative_to=folder)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}", field="RUN_DIR",
                          hint="pass the directory of a finished `sft-hub train` run")
    if not is_complete(run_dir):
        raise RunDirError(f"{run_dir} is not a finished sft-hub run (no {RUN_INFO} with "
                          '"complete": true)', field="RUN_DIR",
                          hint="pass the directory of a finished `sft-hub train` run")
    if not (run_dir / RECIPE_FILE).is_file():
        raise RunDirError(f"{run_dir} has no {RECIPE_FILE}", field="RUN_DIR",
                          hint="the run directory must hold the recipe it was trained with")
    return json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))


def load_run(run_dir: Union[str, os.PathLike]) -> LoadedRun:
    """The run's final model as one plain torch model (an adapter merged into its base), its task
    with the run's processor, and the validation split the run was scored on."""
    import torch
    from datasets import DatasetDict

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    loaded = load_recipe(run_dir / RECIPE_FILE)
    task = get_task_class(loaded.recipe.task)(loaded.recipe, loaded.base_dir)
    raw = task.load_data()
    if list(task.labels) != list(info.get("labels", task.labels)):
        raise DataError(f"the data now gives the labels {task.labels}, but the run was trained "
                        f"with {info['labels']}", file=str(run_dir / RECIPE_FILE), field="data",
                        hint="export with the data the run was trained on")
    task.build_processor()
    saves = info.get("strategy_contract", {}).get("saves", "model")
    if saves == "adapter":  # the root holds an adapter: merge it into the base for export
        from peft import PeftModel

        base = task.build_model()
        model = PeftModel.from_pretrained(base, str(run_dir)).merge_and_unload()
        source = f"adapter merged into {loaded.recipe.model.name}"
    else:  # a plain model at the root (full, merged, both)
        try:
            model = task.auto_model_class().from_pretrained(str(run_dir))
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot load the model of {run_dir}: {e}", field="RUN_DIR",
                              hint="pass the directory of a finished `sft-hub train` run"
                              ) from None
        source = "model" if saves == "model" else f"{saves} (plain model at the root)"
    model = model.to(torch.float32).eval()
    return LoadedRun(run_dir, info, task, model, DatasetDict({"validation": raw["validation"]}),
                     source, loaded)


# -- batches --------------------------------------------------------------------------------------------

def _forward_names(model) -> list[str]:
    import inspect

    return [n for n in inspect.signature(model.forward).parameters if n != "labels"]


def model_batches(run: LoadedRun, limit: Optional[int] = None, batch_size: int = 8
                  ) -> list[dict[str, Any]]:
    """The validation split (first ``limit`` examples) preprocessed and collated as in training:
    a list of dicts of torch tensors (``labels`` included)."""
    from torch.utils.data import DataLoader

    raw = run.validation
    if limit is not None and len(raw["validation"]) > limit:
        raw = raw.__class__({"validation": raw["validation"].select(range(limit))})
    data = run.task.preprocess(raw)["validation"]
    names = set(_forward_names(run.model)) | {"labels"}
    loader = DataLoader(data, batch_size=batch_size, shuffle=False,
                        collate_fn=run.task.data_collator() or _default_collate)
    return [{k: v for k, v in batch.items() if k in names} for batch in loader]


def _default_collate(examples):
    from torch.utils.data import default_collate

    return default_collate(examples)


def _inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


# -- ONNX ---------------------------------------------------------------------------------------------

class _Logits:
    """Factory of the module exported: named tensor inputs -> the model's logits (one output)."""

    @staticmethod
    def wrap(model, names: list[str]):
        import inspect

        import torch

        class LogitsOnly(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                out = self.model(**dict(zip(names, tensors)))
                return out.logits if hasattr(out, "logits") else out[0]

        # The exporter reads input names (and matches dynamic shapes) from the signature.
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        LogitsOnly.forward.__signature__ = inspect.Signature(params)
        return LogitsOnly().eval()


def _model_class(model) -> str:
    inner = getattr(model, "timm_model", None)
    name = type(model).__name__
    return f"{name} ({type(inner).__name__})" if inner is not None else name


def _dynamic_axes(example: dict[str, Any]) -> dict[str, dict[int, str]]:
    """Batch everywhere; the sequence axis of integer (token) inputs of rank 2 or more."""
    axes = {}
    for name, tensor in example.items():
        dims = {0: "batch"}
        if tensor.dim() >= 2 and not tensor.is_floating_point():
            dims[1] = "sequence"
        axes[name] = dims
    return axes


def export_onnx(model, example: dict[str, Any], path: Path, opset: Optional[int] = None) -> str:
    """Write ``model`` (named inputs as in ``example``) to ``path``; returns the exporter used.

    The dynamo exporter first; when it fails, the TorchScript exporter; when both fail, one
    ExportError naming the model class and both reasons.
    """
    import warnings

    import torch

    names = list(example)
    wrapped = _Logits.wrap(model, names)
    args = tuple(example[n] for n in names)
    axes = _dynamic_axes(example)
    reasons = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence")}
            shapes = {n: {i: dims[a] for i, a in axes[n].items()} for n in names}
            program = _quiet(lambda: torch.onnx.export(
                wrapped, args, input_names=names, output_names=["logits"],
                dynamic_shapes=shapes, opset_version=opset, dynamo=True))
            program.save(str(path), external_data=_needs_external_data(model))
            return "dynamo"
        except Exception as e:  # the exporter raises many types; reported below
            reasons.append(f"dynamo exporter: {_first_line(e)}")
        try:
            _quiet(lambda: torch.onnx.export(
                wrapped, args, str(path), input_names=names, output_names=["logits"],
                dynamic_axes={**axes, "logits": _logits_axes(model, example)},
                opset_version=opset or 17,
                dynamo=False))
            return "torchscript"
        except Exception as e:
            reasons.append(f"TorchScript exporter: {_first_line(e)}")
    raise ExportError(f"the ONNX exporter cannot handle the model class {_model_class(model)}: "
                      + "; ".join(reasons),
                      hint="this architecture (or its custom code) has an operation ONNX export "
                      "does not support; serve the run with PyTorch (`sft-hub predict RUN_DIR`) "
                      "or fine-tune an architecture that exports")


def _logits_axes(model, example: dict[str, Any]) -> dict[int, str]:
    return {0: "batch", 1: "sequence"} if scores_are_per_token(example, model) else {0: "batch"}


def _needs_external_data(model) -> bool:
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return size > 1.8 * 1024 ** 3  # protobuf files are limited to 2 GB


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _quiet(call: Callable[[], Any]) -> Any:
    """Run the exporter with its progress prints out of the user's stdout (kept on failure)."""
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            return call()
    except Exception:
        sys.stderr.write(buffer.getvalue()[-2000:])
        raise


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(sess, inputs: dict[str, Any]):
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(["logits"], {k: v.numpy() if hasattr(v, "numpy") else v
                                 for k, v in inputs.items() if k in wanted})[0]


def parity(model, sess, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest |logit difference| between PyTorch and ONNX Runtime over ``batches``."""
    import numpy as np
    import torch

    worst, count = 0.0, 0
    for batch in batches:
        inputs = _inputs(batch)
        with torch.no_grad():
            out = model(**inputs)
        expected = (out.logits if hasattr(out, "logits") else out[0]).numpy()
        got = run_session(sess, inputs)
        if got.shape != expected.shape:
            raise ExportError(f"the ONNX model returned logits of shape {got.shape}, PyTorch "
                              f"{expected.shape}", hint="report this model class as unsupported")
        worst = max(worst, float(np.max(np.abs(got - expected))))
        count += len(expected)
    return {"examples": count, "max_abs_logit_diff": worst}


# -- validation metrics -----------------------------------------------------------------------------

def _concat(arrays: list[Any], pad: float):
    """Stack per-batch arrays whose axis 1 may differ (token logits), padding with ``pad``."""
    import numpy as np

    if arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        spec = [(0, 0)] * a.ndim
        spec[1] = (0, width - a.shape[1])
        padded.append(np.pad(a, spec, constant_values=pad))
    return np.concatenate(padded)


def score(task, logits: Any, labels: Any) -> tuple[dict[str, float], list]:
    """(the task's metrics, its predictions as evaluate takes them) for these logits."""
    pred = EvalPrediction(predictions=logits, label_ids=labels)
    predictions, _ = task.evaluate_inputs(pred)
    return {k: float(v) for k, v in task.task_metrics(pred).items()}, predictions


def validation_scores(task, sessions: dict[str, Any], batches: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """Metrics of each ONNX model on the batches, and the agreement of their predictions."""
    labels = _concat([b["labels"].numpy() for b in batches], -100)
    out: dict[str, Any] = {"examples": int(len(labels))}
    predictions = {}
    for name, sess in sessions.items():
        logits = _concat([run_session(sess, _inputs(b)) for b in batches], 0.0)
        out[name], predictions[name] = score(task, logits, labels)
    if len(predictions) == 2:
        out["agreement"] = agreement(*predictions.values())
    return out


def agreement(a: list, b: list) -> float:
    """Fraction of predictions two models share (per example, or per word for word-level tasks)."""
    pairs = [(x, y) for xs, ys in zip(a, b)
             for x, y in (zip(xs, ys) if isinstance(xs, (list, tuple)) else [(xs, ys)])]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


# Dynamic quantisation pays off for matrix products (transformer layers) and shrinks embedding
# tables (Gather of a weight). Convolutions are left in float: ONNX Runtime's dynamic ConvInteger
# lost 49 points of accuracy and ran 13x slower than float on the efficientnet_lite0 digits
# benchmark (benchmarks/export.py); a convolutional network's int8 model therefore differs from
# the float one in its matrix products only.
QUANTIZED_OPS = ("MatMul", "Gather")
INT8_LOSS_WARNING = 0.01  # a larger drop of the best metric on validation is reported


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantisation of :data:`QUANTIZED_OPS`: int8 weights, activations
    quantised at run time."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantise the model as exported
            prepared = source
        # Per-channel weight scales: on the SST-2 MiniLM benchmark per-tensor scales lost 1.4
        # points of accuracy, per-channel ones none.
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True)


# -- the export -----------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    versions = {"sft_hub": __version__, "python": platform.python_version()}
    for lib in ("torch", "transformers", "timm", "peft", "onnx", "onnxruntime", "onnxscript",
                "tokenizers"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            pass
    return versions


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _write_config(model, folder: Path, labels: list[str]) -> None:
    """The model config with ``id2label`` (timm configs store ``label_names``: both are written)."""
    model.config.save_pretrained(folder)
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    config["label2id"] = {name: i for i, name in enumerate(labels)}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def export_run(run_dir: Union[str, os.PathLike], output: Union[str, os.PathLike], *,
               quantize: Optional[str] = None, overwrite: bool = False,
               opset: Optional[int] = None, examples: int = PARITY_EXAMPLES,
               tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """Export a finished run to ``output`` (see the module docstring); returns the folder and
    what ``export_info.json`` records."""
    require_export_libraries()
    run_dir, output = Path(run_dir), Path(output)
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"unknown quantisation {quantize!r}", field="--quantize",
                          hint=f"use one of: {', '.join(QUANTIZE_CHOICES)}")
    read_run_info(run_dir)
    check_output(output, run_dir, overwrite=overwrite)
    started = time.time()
    run = load_run(run_dir)
    building = _sibling(output, BUILDING_SUFFIX)
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    try:
        info = _build(run, building, quantize=quantize, opset=opset, examples=examples,
                      tolerance=tolerance)
        info["export_seconds"] = round(time.time() - started, 2)
        (building / EXPORT_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _put_in_place(building, output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _say(f"exported {run_dir} to {output}")
    return ExportResult(output, info)


def _build(run: LoadedRun, folder: Path, *, quantize: Optional[str], opset: Optional[int],
           examples: int, tolerance: float) -> dict[str, Any]:
    task, model = run.task, run.model
    check_batches = model_batches(run, limit=examples)
    if not check_batches:
        raise DataError("the run's validation split is empty; the export cannot be checked",
                        field="data")
    example = _example(check_batches, _forward_names(model))
    exporter = export_onnx(model, example, folder / MODEL_FILE, opset)
    with _runtime_errors(model, "run the exported model"):
        float_sess = session(folder / MODEL_FILE)
        checked = parity(model, float_sess, check_batches)
    _say(f"parity on {checked['examples']} validation examples: max |logit diff| "
         f"{checked['max_abs_logit_diff']:.3g} (limit {tolerance:g})")
    if checked["max_abs_logit_diff"] > tolerance:
        raise ExportError(f"the ONNX model does not reproduce PyTorch: max |logit difference| "
                          f"{checked['max_abs_logit_diff']:.3g} on {checked['examples']} "
                          f"validation examples (limit {tolerance:g}) for "
                          f"{_model_class(model)}", hint="report the model class; the export "
                          "was not written")
    checked["tolerance"] = tolerance

    task.save_processor(folder)
    _write_config(model, folder, task.labels)
    (folder / RECIPE_FILE).write_text(run.recipe_yaml(folder), encoding="utf-8")
    spec = preprocessing_spec(task, folder)
    checked["preprocessing"] = check_preprocessing(task, spec, folder, run.validation["validation"],
                                                   model, float_sess, limit=examples)

    all_batches = model_batches(run)
    sessions = {"float": float_sess}
    models = {"float": MODEL_FILE}
    if quantize == "int8":
        with _runtime_errors(model, "quantise the exported model to int8"):
            quantize_int8(folder / MODEL_FILE, folder / INT8_FILE)
            sessions["int8"] = session(folder / INT8_FILE)
        models["int8"] = INT8_FILE
    with _runtime_errors(model, "run the exported model"):
        scores = validation_scores(task, sessions, all_batches)
    best = task.best_metric
    line = "  ".join(f"{name} {best}={scores[name].get(best, float('nan')):.4f}"
                     for name in sessions)
    if "agreement" in scores:
        line += f"  agreement={scores['agreement']:.4f}"
    _say(f"validation ({scores['examples']} examples): {line}")
    if "int8" in scores:
        scores["int8_quantized_ops"] = list(QUANTIZED_OPS)
        drop = _signed_drop(task, scores["float"].get(best), scores["int8"].get(best))
        if drop is not None and drop > INT8_LOSS_WARNING:
            _say(f"warning: the int8 model loses {drop:.4f} of validation {best} "
                 f"({scores['float'][best]:.4f} -> {scores['int8'][best]:.4f}); serve "
                 f"{MODEL_FILE} (the float model) if that matters")

    return {
        "format": "sft-hub-onnx-export",
        "source_run": str(run.run_dir.resolve()),
        "task": task.name,
        "base_model": run.run_info.get("base_model"),
        "weights": run.source,
        "model_class": _model_class(model),
        "labels": list(task.labels),
        "models": models,
        "default_model": "int8" if quantize == "int8" else "float",
        "exporter": exporter,
        "opset": _opset(folder / MODEL_FILE),
        "inputs": {n: _axis_names(t, _dynamic_axes(example)[n]) for n, t in example.items()},
        "outputs": {"logits": ["batch", *(["sequence"] if scores_are_per_token(example, model)
                                          else []), "labels"]},
        "parity": checked,
        "validation": scores,
        "run_validation": _run_metrics(run.run_dir),
        "preprocessing": spec,
        "preprocessing_version": PREPROCESSING_VERSION,
        "task_contract": run.run_info.get("task_contract"),
        "versions": _versions(),
        "sizes_bytes": {name: (folder / f).stat().st_size for name, f in models.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class _runtime_errors:
    """ONNX Runtime failing on the exported graph (e.g. an axis the exporter fixed) becomes one
    ExportError naming the model class; sft-hub's own errors pass through."""

    def __init__(self, model, doing: str):
        self.model, self.doing = model, doing

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, SftHubError) or not isinstance(exc, Exception):
            return False
        raise ExportError(f"ONNX Runtime cannot {self.doing} of the model class "
                          f"{_model_class(self.model)}: {_first_line(exc)}",
                          hint="report this model class as unsupported by sft-hub export; serve "
                          "the run with PyTorch (`sft-hub predict RUN_DIR`)") from None


def _signed_drop(task, float_value, int8_value) -> Optional[float]:
    """How much worse int8 is on the best metric (positive: worse), in the metric's direction."""
    if float_value is None or int8_value is None:
        return None
    return (float_value - int8_value) if task.greater_is_better else (int8_value - float_value)


def _example(batches: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Example inputs for the exporter: at least two examples (a batch of one would fix the
    batch axis to 1)."""
    import torch

    inputs = _inputs(batches[0])
    if not inputs:
        raise ExportError(f"the preprocessed data gives none of the inputs {', '.join(names)} "
                          "that the model's forward takes", hint="report this model as "
                          "unsupported by sft-hub export")
    first = next(iter(inputs.values()))
    if len(first) >= 2:
        return inputs
    return {k: torch.cat([v, v]) for k, v in inputs.items()}


def _axis_names(tensor, axes: dict[int, str]) -> list:
    return [axes.get(i, int(size)) for i, size in enumerate(tensor.shape)]


def scores_are_per_token(example: dict[str, Any], model) -> bool:
    import torch

    with torch.no_grad():
        out = model(**{k: v[:1] for k, v in example.items()})
    return (out.logits if hasattr(out, "logits") else out[0]).dim() == 3


def _run_metrics(run_dir: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("validation")
    except (OSError, ValueError):
        return None


def format_export(result: ExportResult) -> str:
    """The export in a few lines: files, parity, validation figures."""
    info = result.info
    parity = info["parity"]
    lines = [f"export folder: {result.output}",
             f"  model: {info['model_class']} ({info['weights']}), opset {info['opset']}, "
             + ", ".join(f"{n} {info['models'][n]} {size / 1e6:.1f} MB"
                         for n, size in info["sizes_bytes"].items()),
             f"  parity: max |logit diff| {parity['max_abs_logit_diff']:.3g} on "
             f"{parity['examples']} validation examples (limit {parity['tolerance']:g})"]
    scores, best = info["validation"], info["task_contract"] and info["task_contract"].get(
        "best_metric")
    for name in info["models"]:
        shown = {k: v for k, v in scores[name].items() if best is None or k == best}
        lines.append(f"  validation ({scores['examples']} examples), {name}: "
                     + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if "agreement" in scores:
        lines.append(f"  float / int8 prediction agreement: {scores['agreement']:.4f}")
    return "\n".join(lines)
