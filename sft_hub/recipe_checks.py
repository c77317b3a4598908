"""Checks of a loaded recipe that need to know its task, run by ``sft-hub validate`` and again by
``train`` before anything is read or written (so a run fails in a second, not after loading data).

Torch-free, offline: the weights ``model.path`` names exist (a folder, a file or a ``pkg:``
package), ``hub.push`` has a ``hub.repo_id``, no two column settings name the same column,
``training.metric_for_best_model`` is a figure the task reports, every ``training.report_to``
integration is installed (naming the pip extra), and the local data files a recipe from the Hub
names are where a Hub recipe's paths point: the directory you run in.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Optional

from .errors import RecipeError
from .hub_refs import is_hub_ref
from .models.transformers_backend import resolve_model_path
from .recipe.load import LoadedRecipe

# report_to integration -> (module that must be importable, what to install)
REPORT_TO_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'sft-hub[tensorboard]'"),
    "trackio": ("trackio", "pip install 'sft-hub[trackio]'"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow"),
    "comet_ml": ("comet_ml", "pip install comet_ml"),
    "neptune": ("neptune", "pip install neptune"),
    "clearml": ("clearml", "pip install clearml"),
    "codecarbon": ("codecarbon", "pip install codecarbon"),
    "dagshub": ("dagshub", "pip install dagshub"),
    "dvclive": ("dvclive", "pip install dvclive"),
    "swanlab": ("swanlab", "pip install swanlab"),
    "azure_ml": ("azureml", "pip install azureml-core"),
    "flyte": ("flytekit", "pip install flytekit"),
    "kubeflow": ("kubeflow", "pip install kubeflow"),
}
# Where TensorBoard logs can come from: the tensorboard package or tensorboardX.
_ALTERNATIVES = {"tensorboard": ("tensorboard", "tensorboardX")}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_report_to(training: dict[str, Any], source: Optional[str] = None) -> None:
    """Every ``report_to`` integration is known and its package is installed."""
    value = training.get("report_to")
    if value is None:
        return
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    for name in names:
        if not isinstance(name, str) or name in ("none", "all"):
            continue
        if name not in REPORT_TO_PACKAGES:
            import difflib

            close = difflib.get_close_matches(name, list(REPORT_TO_PACKAGES), n=1)
            raise RecipeError(f"unknown report_to integration {name!r}", file=source,
                              field="training.report_to",
                              hint=(f"did you mean {close[0]!r}? " if close else "")
                              + f"one of: none, all, {', '.join(sorted(REPORT_TO_PACKAGES))}")
        module, install = REPORT_TO_PACKAGES[name]
        if not any(_installed(m) for m in _ALTERNATIVES.get(name, (module,))):
            raise RecipeError(f"report_to: {name} needs the {module!r} package, which is not "
                              "installed", file=source, field="training.report_to",
                              hint=f"{install}, or set training.report_to: none")


def check_model_path(loaded: LoadedRecipe) -> None:
    """The local weights ``model.path`` names exist (a folder or file, or a ``pkg:`` package)."""
    if loaded.recipe.model.path == "":
        raise RecipeError("model.path is empty", file=_origin(loaded, ("model", "path")),
                          field="model.path", hint="give a local folder or file, pkg:<package>/"
                          "<subdir>, or model.path=null to load model.name")
    try:
        resolve_model_path(loaded.recipe.model, loaded.base_dir)
    except RecipeError as e:
        origin = loaded.origins.get(("model", "path"), loaded.path)
        e.file = e.file or origin
        if is_hub_ref(origin):
            e.hint = (f"a recipe from the Hub names paths relative to the directory you run in "
                      f"({Path.cwd()}); put the weights there, or pass model.path=<folder> (or "
                      "model.path=null to download model.name)")
        raise


def check_push_settings(loaded: LoadedRecipe) -> None:
    hub = loaded.recipe.hub
    if hub.push and not hub.repo_id:
        raise RecipeError(f"hub.push is {hub.push!r} but hub.repo_id is not set", file=loaded.path,
                          field="hub.repo_id",
                          hint="set hub.repo_id: <user or organisation>/<model name>, or remove "
                               "hub.push")


def check_columns(loaded: LoadedRecipe) -> None:
    """Two column settings naming the same column (``text_column: label``) train on the label."""
    seen: dict[str, str] = {}
    for name, value in loaded.recipe.data.model_dump().items():
        if not name.endswith("_column") or not isinstance(value, str):
            continue
        if value in seen:
            raise RecipeError(f"data.{name} and data.{seen[value]} both name the column {value!r}",
                              file=_origin(loaded, ("data", name)), field=f"data.{name}",
                              hint="each column setting names a different column of the data")
        seen[value] = name


def metric_names(task_cls, labels: Optional[list[str]]) -> tuple[set[str], Optional[re.Pattern]]:
    """The figures a task reports (keys of metrics.json) and a pattern for its per-class keys."""
    names = {m.key for m in task_cls.metrics} | {"loss"}
    pattern = None
    if task_cls.per_class is not None:
        if labels:
            names |= task_cls.per_class.keys(task_cls.per_class_names(list(labels)))
        fields = "|".join(map(re.escape, task_cls.per_class.fields))
        template = re.escape(task_cls.per_class.key).replace(r"\{field\}", f"(?:{fields})")
        pattern = re.compile("^" + template.replace(r"\{name\}", ".+") + "$")
    return names, pattern


def check_best_metric(loaded: LoadedRecipe, task_cls) -> None:
    """``training.metric_for_best_model`` names a figure the task reports (``eval_`` optional)."""
    training = loaded.recipe.training
    metric = training.get("metric_for_best_model")
    if not isinstance(metric, str) or training.get("extra_metrics"):
        return  # extra evaluate modules name their figures only when loaded
    key = metric[len("eval_"):] if metric.startswith("eval_") else metric
    names, pattern = metric_names(task_cls, loaded.recipe.data.labels)
    if key in names or (pattern is not None and pattern.match(key)):
        return
    import difflib

    close = difflib.get_close_matches(key, sorted(names), n=1)
    raise RecipeError(f"{metric!r} is not a figure {task_cls.name} reports",
                      file=_origin(loaded, ("training", "metric_for_best_model")),
                      field="training.metric_for_best_model",
                      hint=(f"did you mean {close[0]!r}? " if close else "")
                      + f"one of: {', '.join(sorted(names))}")


def check_hub_data_files(loaded: LoadedRecipe) -> None:
    """Local files a recipe from the Hub names are relative to the directory you run in; a missing
    one is an error naming that place and the override that points elsewhere."""
    files = loaded.recipe.data.files or {}
    for split, value in files.items():
        origin = _origin(loaded, ("data", "files", split))
        if not is_hub_ref(origin):
            continue
        for item in value if isinstance(value, list) else [value]:
            path = loaded.base_dir / item
            if not path.exists():
                raise RecipeError(
                    f"data file {item!r} not found: the recipe comes from {origin}, whose local "
                    f"paths are relative to the directory you run in, so it looks for {path}",
                    file=origin, field=f"data.files.{split}",
                    hint=f"run from the directory that holds {item} (e.g. the project's root), "
                         f"or pass data.files.{split}=<path to your copy> on the command line")


def _origin(loaded: LoadedRecipe, leaf: tuple) -> str:
    for n in range(len(leaf), 0, -1):
        for path, source in loaded.origins.items():
            if path[:n] == leaf[:n]:
                return source
    return loaded.path


def check_recipe(loaded: LoadedRecipe, task_cls) -> None:
    """Every check above (raises the first problem as a RecipeError naming the field)."""
    check_push_settings(loaded)
    check_columns(loaded)
    check_best_metric(loaded, task_cls)
    check_report_to(loaded.recipe.training, _origin(loaded, ("training", "report_to")))
    check_hub_data_files(loaded)
    check_model_path(loaded)
