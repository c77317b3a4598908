"""The model card (README.md) pushed with a run: Hub metadata, then a summary a reader can act on.

Built from the run directory alone (``recipe.yaml``, ``metrics.json``, ``run_info.json``), so the
card of ``sft-hub push`` weeks later is the card the training run would have pushed. What the card
says about the task (metric names, pipeline, usage snippet, Auto classes) comes from the task's
declared contract, recorded by the run in ``run_info.json`` under ``task_contract``
(:meth:`sft_hub.tasks.base.Task.card_facts`); run directories written before that record get the
registered task's declarations instead. The YAML
metadata is produced with huggingface_hub's own ``ModelCardData``/``EvalResult`` so that it follows
the Hub's conventions (``model-index`` renders as evaluation results on the model page).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Iterable, Optional

from . import card_sections
from .metrics import PerClass
from .recipe.yaml_io import parse_yaml
from .strategies import STRATEGIES
from .tasks import get_task_class

# Trainer bookkeeping that is not a quality measure.
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos")
PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


@dataclass
class RunRecord:
    """What a finished run directory says about itself."""

    recipe: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    info: dict[str, Any]
    state: dict[str, Any]  # the Trainer's trainer_state.json

    @classmethod
    def load(cls, run_dir: Path) -> "RunRecord":
        def read_json(name: str) -> dict:
            try:
                return json.loads((run_dir / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}

        try:
            recipe = parse_yaml((run_dir / "recipe.yaml").read_text(encoding="utf-8"),
                                source=str(run_dir / "recipe.yaml")) or {}
        except OSError:
            recipe = {}
        return cls(recipe, read_json("metrics.json"), read_json("run_info.json"),
                   read_json("trainer_state.json"))

    def section(self, name: str) -> dict[str, Any]:
        value = self.recipe.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def task(self) -> str:
        return self.info.get("task") or self.recipe.get("task") or "?"

    @property
    def base_model(self) -> str:
        return self.info.get("base_model") or self.section("model").get("name") or "?"

    @property
    def strategy(self) -> dict[str, Any]:
        return self.section("strategy") or {"name": self.info.get("strategy", "full")}

    @property
    def backend(self) -> str:
        return self.section("model").get("backend", "transformers")

    @property
    def labels(self) -> list[str]:
        labels = self.info.get("labels") or self.section("data").get("labels") or []
        return [str(label) for label in labels]

    def task_class(self):
        try:
            return get_task_class(self.task)
        except Exception:  # an unknown task still gets a card, without task-specific parts
            return None

    @property
    def contract(self) -> dict[str, Any]:
        """The task's declared facts: as the run recorded them, else the registered task's."""
        facts = self.info.get("task_contract")
        if isinstance(facts, dict):
            return facts
        task_cls = self.task_class()
        if task_cls is not None:
            try:
                return task_cls.static_facts(self.labels)
            except Exception:  # e.g. transformers missing: the card is still written
                pass
        return {"pipeline_task": self.task, "metrics": [], "per_class": None}

    def metric(self, key: str) -> dict[str, Any]:
        """The declaration of one metrics.json key (undeclared keys are named by the key)."""
        for spec in self.contract.get("metrics") or []:
            if spec.get("key") == key:
                return spec
        return {"key": key, "name": key, "type": key, "config": None}

    @property
    def pipeline_tag(self) -> str:
        return self.contract.get("pipeline_task") or self.task


# -- metric helpers -------------------------------------------------------------------------------

def _per_class(run: RunRecord) -> tuple[Optional[PerClass], list[str]]:
    spec = run.contract.get("per_class")
    if not spec:
        return None, []
    return PerClass(spec["key"], tuple(spec["fields"])), list(spec.get("names") or run.labels)


def overall_metrics(metrics: dict[str, Any], run: RunRecord) -> dict[str, float]:
    """The headline figures of one split: no per-class keys, no Trainer bookkeeping."""
    per_class, names = _per_class(run)
    skip = per_class.keys(names) if per_class else set()
    return {k: v for k, v in metrics.items()
            if k not in skip and not k.startswith(NOT_METRICS) and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if c is not None else "–" for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def _duration(seconds: Any) -> str:
    try:
        seconds = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "?"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return " ".join(p for p in (f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
                                f"{secs} s") if p)


# -- metadata -------------------------------------------------------------------------------------

def _dataset_identity(run: RunRecord) -> tuple[str, str]:
    """(model-index dataset type, pretty name): the Hub dataset id, or the local files' folder."""
    data = run.section("data")
    if data.get("dataset"):
        config = f" ({data['config']})" if data.get("config") else ""
        return data["dataset"], data["dataset"] + config
    files = (data.get("files") or {}).get("train")
    first = files[0] if isinstance(files, list) and files else files
    folder = Path(str(first)).parent.name if first else ""
    recipe = Path(str(run.info.get("recipe", ""))).name.split("@")[0].rsplit(".", 1)[0]
    return data.get("format") or "local", folder or recipe or "local data"


def layout(files: Iterable[str]) -> str:
    """What the pushed files hold: ``adapter`` (at the root), ``both`` (a model and ``adapter/``)
    or ``model``."""
    files = set(files)
    if "adapter_config.json" in files:
        return "adapter"
    return "both" if "adapter/adapter_config.json" in files else "model"


def library_name(run: RunRecord, kind: str) -> str:
    if kind == "adapter":
        return "peft"
    return "timm" if run.backend == "timm" else "transformers"


def card_data(run: RunRecord, *, repo_id: str, kind: str):
    """huggingface_hub ``ModelCardData`` for the card's YAML header."""
    from huggingface_hub import EvalResult, ModelCardData

    pipeline_tag = run.pipeline_tag
    data = run.section("data")
    dataset_type, dataset_name = _dataset_identity(run)
    primary = run.contract.get("best_metric")
    results = []
    for split in ("validation", "test"):
        figures = overall_metrics(run.metrics.get(split) or {}, run)
        for key in sorted(figures, key=lambda k: (k != primary, k == "loss", k)):
            spec = run.metric(key)
            metric_type, metric_name, config = spec["type"], spec["name"], spec.get("config")
            results.append(EvalResult(
                task_type=pipeline_tag, dataset_type=dataset_type, dataset_name=dataset_name,
                dataset_config=data.get("config"), dataset_split=split, metric_type=metric_type,
                metric_name=f"{metric_name} ({split})", metric_config=config,
                metric_value=round(float(figures[key]), 6)))
    hub = run.section("hub")
    library = library_name(run, kind)
    strategy = _strategy_facts(run).get("name") or run.strategy.get("name", "full")
    tags = ["sft-hub", run.task, strategy,
            *([library] if library != "transformers" else []), *(hub.get("tags") or [])]
    # base_model must be a Hub model id; a timm registry name or random weights have none
    pretrained = run.section("model").get("pretrained", True)
    base_model = base_model_id(run) if pretrained else None
    return ModelCardData(
        base_model=base_model, datasets=[data["dataset"]] if data.get("dataset") else None,
        library_name=library, license=hub.get("license"), pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(tags)), model_name=repo_id.split("/")[-1],
        # model-index needs a Hub dataset id (dataset.type): local files get no model-index (a
        # made-up type would link to a Hub dataset of that name); their results are in the body
        eval_results=(results or None) if data.get("dataset") else None)


def base_model_id(run: RunRecord) -> Optional[str]:
    """The Hub id of the base model: ``model.name`` when it is one; a timm model's pretrained
    weights (``timm/<name>.<tag>``) for a timm registry name."""
    if run.backend == "timm":
        return card_sections.timm_hub_id(run.base_model)
    return run.base_model if "/" in run.base_model else None


# -- body -----------------------------------------------------------------------------------------

def _strategy_facts(run: RunRecord) -> dict[str, Any]:
    """The strategy's declared contract: as the run recorded it (``strategy_contract`` in
    run_info.json), else, for run directories written before that record, the registered
    strategy's contract for the recipe's ``strategy:`` section; {} for an unknown strategy."""
    facts = run.info.get("strategy_contract")
    if isinstance(facts, dict):
        return facts
    try:
        section = run.strategy
        spec_class = STRATEGIES.get(section.get("name", "full"), field="strategy.name").spec_class
        return spec_class.model_validate(section).contract().to_dict()
    except Exception:  # an unknown or changed strategy still gets a card
        return {}


# For a strategy whose contract is unknown: what the pushed layout itself says.
GENERIC_WEIGHTS = {"model": "the model weights", "adapter": "an adapter (see adapter_config.json)",
                   "both": "a model at the root and an adapter in `adapter/`"}


def _strategy_text(run: RunRecord) -> str:
    spec = run.strategy
    facts = _strategy_facts(run)
    options = ", ".join(f"{k}={v}" for k, v in spec.items()
                        if k != "name" and v not in (None, [], {}))
    name = facts.get("name") or spec.get("name", "full")
    text = f"`{name}`" + (f" ({options})" if options else "")
    params = run.info.get("parameters") or {}
    if params.get("total"):
        trainable = params.get("trainable", 0)
        percent = params.get("trainable_percent", 100 * trainable / params["total"])
        text += f"; {trainable:,} of {params['total']:,} parameters trained ({percent:.2f}%)"
    if facts.get("trains"):
        text += f": {facts['trains']}"
    return text


def _weights_text(run: RunRecord, kind: str) -> str:
    """How the strategy's contract describes the pushed layout ``kind`` (model/adapter/both)."""
    weights = _strategy_facts(run).get("weights") or {}
    return weights.get(kind) or GENERIC_WEIGHTS.get(kind, GENERIC_WEIGHTS["model"])


def _data_text(run: RunRecord) -> str:
    data = run.section("data")
    if data.get("dataset"):
        source = f"[{data['dataset']}](https://huggingface.co/datasets/{data['dataset']})"
        if data.get("config"):
            source += f", configuration `{data['config']}`"
        splits = {k: v for k, v in (data.get("splits") or {}).items() if v}
        if splits:
            source += ", splits " + ", ".join(f"{k}=`{v}`" for k, v in splits.items())
    else:
        def short(path: Any) -> str:  # the folder and file name, not the trainer's home directory
            return "/".join(Path(str(path)).parts[-2:])

        files = data.get("files") or {}
        source = "local files: " + ", ".join(
            f"{split} `{', '.join(map(short, v)) if isinstance(v, list) else short(v)}`"
            for split, v in files.items())
    limits = [f"{k}={data[k]}" for k in ("max_train_samples", "max_eval_samples") if data.get(k)]
    return source + (f" ({', '.join(limits)})" if limits else "")


def _usage(run: RunRecord, repo_id: str, kind: str, revision: Optional[str], *,
           local: bool = False) -> str:
    rev = f', revision="{revision}"' if revision and revision != "main" else ""
    blocks = []
    if run.backend == "timm" and kind != "adapter":
        at = f"@{revision}" if rev else ""
        source = f"local-dir:{repo_id}" if local else f"hf-hub:{repo_id}{at}"
        blocks.append(f'import timm\n\nmodel = timm.create_model("{source}", '
                      "pretrained=True)")
    if kind == "adapter":
        blocks.append(_peft_usage(run, repo_id, rev, ""))
    else:
        blocks.append(usage_snippet(run.contract, f'"{repo_id}"{rev}'))
    if kind == "both":
        blocks.append(_peft_usage(run, repo_id, rev, ', subfolder="adapter"'))
    return "\n\n".join(f"```python\n{b}\n```" for b in blocks)


def usage_snippet(contract: dict[str, Any], model: str) -> str:
    """The task's usage code for ``model`` (Python source: the quoted id and load options)."""
    template = contract.get("usage") or (
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("{contract.get("pipeline_task")}", model=$model)')
    return Template(template).safe_substitute(model=model)


def _peft_usage(run: RunRecord, repo_id: str, rev: str, subfolder: str) -> str:
    """Code that loads the adapter; label names and the task's config keys (set after loading:
    from_pretrained passes keys the config class lacks to the model) go to the base model, whose
    config lacks them."""
    contract, labels = run.contract, run.labels
    auto = contract.get("auto_model_class") or "AutoModel"
    peft_auto = contract.get("peft_model_class")
    extras = contract.get("model_config") or {}
    names = (f"labels = {labels!r}\nnames = dict(id2label=dict(enumerate(labels)), "
             "label2id={label: i for i, label in enumerate(labels)})\n"
             if labels else "names = {}\n")
    if peft_auto and not subfolder:
        update = f"\nmodel.get_base_model().config.update({extras!r})" if extras else ""
        return (f"from peft import {peft_auto}\n\n{names}"
                f'model = {peft_auto}.from_pretrained("{repo_id}"{rev}, **names){update}')
    update = f"base.config.update({extras!r})\n" if extras else ""
    return (f"from peft import PeftConfig, PeftModel\nfrom transformers import {auto}\n\n{names}"
            f'config = PeftConfig.from_pretrained("{repo_id}"{rev}{subfolder})\n'
            f"base = {auto}.from_pretrained(config.base_model_name_or_path, **names)\n{update}"
            f'model = PeftModel.from_pretrained(base, "{repo_id}"{rev}{subfolder})')


def _metrics_section(run: RunRecord) -> str:
    splits = [s for s in ("validation", "test") if run.metrics.get(s)]
    if not splits:
        return "No evaluation metrics were recorded."
    overall = {s: overall_metrics(run.metrics[s], run) for s in splits}
    keys = list(dict.fromkeys(k for s in splits for k in overall[s]))
    rows = [[run.metric(k)["name"], *(overall[s].get(k) for s in splits)] for k in keys]
    parts = [_table(["metric", *splits], rows)]
    per_class, names = _per_class(run)
    if per_class is None:
        return parts[0]
    for split in splits:
        figures = run.metrics[split]

        def value(name: str, field: str):
            return figures.get(per_class.key.format(name=name, field=field))

        shown = [n for n in names if any(value(n, f) is not None for f in per_class.fields)]
        fields = [f for f in per_class.fields if any(value(n, f) is not None for n in shown)]
        if not shown:
            continue
        rows = [[n, *(value(n, f) for f in fields)] for n in shown]
        parts.append(f"Per class ({split}):\n\n" + _table(["class", *fields], rows))
    return "\n\n".join(parts)


def _hyperparameters(run: RunRecord) -> str:
    values = dict(run.info.get("training_arguments") or {})
    values.update(run.section("training"))
    if not values:
        return "The Trainer defaults of sft-hub (see `recipe.yaml`)."
    return _table(["setting", "value"], [[f"`{k}`", f"`{v}`"] for k, v in sorted(values.items())])


def _environment(run: RunRecord) -> str:
    info = run.info
    topology = info.get("topology") or {}
    lines = [f"- training time: {_duration(info.get('train_seconds'))}",
             f"- hardware: {info.get('hardware', '?')}"]
    state = run.state
    if state.get("global_step"):
        lines.append(f"- {state['global_step']} optimizer steps over "
                     f"{_fmt(state.get('epoch', '?'))} epochs, batch size "
                     f"{state.get('train_batch_size', '?')} per device")
    if topology:
        lines.append(f"- processes: {topology.get('num_processes', 1)}, mixed precision: "
                     f"{topology.get('mixed_precision', 'no')}")
    versions = info.get("versions") or {}
    if versions:
        lines.append("- library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def _reproduce(run: RunRecord, repo_id: str, revision: Optional[str]) -> str:
    data = run.section("data")
    return card_sections.reproduce(
        repo_id, revision, version=(run.info.get("versions") or {}).get("sft_hub"),
        local_files=[] if data.get("dataset") else card_sections.local_data_files(data))


def _about_sections(run: RunRecord) -> list[str]:
    """Intended use, limitations and the training data's licence."""
    data = run.section("data")
    out = ["## Intended use", card_sections.intended_use(run.section("hub"), run.task, run.labels,
                                                         _data_text(run)),
           "## Limitations", card_sections.limitations(bool(run.metrics.get("test")))]
    credit = card_sections.training_data(data)
    if credit:
        out += ["## Training data", f"{_data_text(run)}\n\n{credit}"]
    return out


def _per_epoch(run: RunRecord) -> str:
    """The validation results of every evaluation (from ``trainer_state.json``), or ''."""
    keys = [m["key"] for m in run.contract.get("metrics") or [] if m.get("headline")]
    header, rows = card_sections.epoch_rows(run.state.get("log_history") or [], keys)
    if not rows:
        return ""
    names = [run.metric(k)["name"] if k in keys else k for k in header]
    return "\n\nResults per epoch (validation, `trainer_state.json`):\n\n" + _table(names, rows)


def _report_section(run_dir: Path, files: list[str]) -> tuple[str, set[str]]:
    """The evaluation report of the run (``eval/<split>/``, written by sft_hub.evaluation):
    the confidence interval and calibration of each split, the confusion matrix and learning
    curves linked relatively (they render on the Hub after a push); and the pictures it shows."""
    parts, shown = [], set()
    for split in ("test", "validation"):
        folder = f"{EVAL_FOLDER}/{split}"
        try:
            report = json.loads((run_dir / folder / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        ci, ece = report.get("confidence_interval") or {}, (report.get("calibration") or {})
        if ci:
            parts.append(f"{split} ({report.get('examples', '?')} examples): `{ci['metric']}` "
                         f"{ci['value']:.4f}, {int(100 * ci.get('level', 0.95))}% bootstrap "
                         f"confidence interval {ci['low']:.4f}-{ci['high']:.4f} "
                         f"({ci.get('resamples')} resamples); expected calibration error "
                         f"{ece.get('ece', float('nan')):.4f}.")
        for picture, title in (("confusion_matrix.png", f"Confusion matrix ({split})"),
                               ("reliability_diagram.png", f"Reliability diagram ({split})")):
            path = f"{folder}/{picture}"
            if path in files and (split == "test" or not any(p.startswith(f"{EVAL_FOLDER}/test/")
                                                           for p in shown)):
                parts.append(f"![{title}]({path})")
                shown.add(path)
        parts.append(f"Per-class figures, the confusion matrix as CSV and the most confident "
                     f"mistakes: [`{folder}/`]({folder}/).")
    if CURVES_FILE in files:
        parts.append(f"![Learning curves]({CURVES_FILE})")
        shown.add(CURVES_FILE)
    return "\n\n".join(parts), shown


EVAL_FOLDER, CURVES_FILE = "eval", "learning_curves.png"


def write_run_card(staging: Path, run_info: dict[str, Any], final: Path) -> None:
    """The model card ``README.md`` of a run directory, written at the end of training (the
    ``run_info.json`` it reads is put in ``staging`` for the time it takes): the usage snippet
    loads the run directory, the pictures are linked relatively."""
    staging = Path(staging)
    info = staging / "run_info.json"
    info.write_text(json.dumps(run_info, default=str), encoding="utf-8")
    try:
        files = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
        repo_id = (RunRecord.load(staging).section("hub").get("repo_id")
                   or f"local/{Path(final).name}")
        text = build_card(staging, repo_id=repo_id, files=files, model_ref=str(final))
    finally:
        info.unlink(missing_ok=True)
    tmp = staging / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(staging / "README.md")


def build_card(run_dir: Path, *, repo_id: str, files: Iterable[str],
               revision: Optional[str] = None, model_ref: Optional[str] = None) -> str:
    """README.md text for ``run_dir`` pushed to ``repo_id``; ``files``: the paths pushed with it.
    ``model_ref``: where the usage snippet loads the model from instead of ``repo_id`` (the run
    directory, for the card a run writes locally)."""
    files = list(files)
    run = RunRecord.load(Path(run_dir))
    kind = layout(files)
    metadata = card_data(run, repo_id=repo_id, kind=kind)
    if any(".tfevents." in Path(f).name for f in files):  # logs/tensorboard: the metrics tab
        metadata.tags = list(dict.fromkeys([*(metadata.tags or []), "tensorboard"]))
    name = repo_id.split("/")[-1]
    base = run.base_model
    base_link = f"[{base}](https://huggingface.co/{base})" if "/" in base else f"`{base}`"
    if not run.section("model").get("pretrained", True):
        base_link += " (architecture only: trained from random weights)"
    labels = run.labels
    label_list = f"{len(labels)}: " + ", ".join(f"`{label}`" for label in labels) if labels else "?"
    rows = [["Task", f"`{run.task}`"], ["Base model", base_link],
            ["Strategy", _strategy_text(run)],
            ["Weights in this repository", _weights_text(run, kind)],
            ["Training data", _data_text(run)], ["Labels", label_list]]
    sections = [
        f"# {name}",
        f"{base_link} fine-tuned for **{run.task}** with sft-hub from a declarative recipe "
        "(`recipe.yaml` in this repository).",
        _table(["", ""], rows),
        "## Usage", _usage(run, model_ref or repo_id, kind, None if model_ref else revision,
                           local=model_ref is not None),
        "## Evaluation", _metrics_section(run) + _per_epoch(run),
        "## Training hyperparameters", _hyperparameters(run),
        "## Training environment", _environment(run),
        "## Reproduce", _reproduce(run, repo_id, revision),
    ]
    at = sections.index("## Evaluation")
    sections[at:at] = _about_sections(run)  # intended use, limitations, the data's licence
    report, shown = _report_section(Path(run_dir), files)
    if report:
        at = sections.index("## Training hyperparameters")
        sections[at:at] = ["## Evaluation report", report]
    notes = run.info.get("notes") or []
    if notes:
        sections += ["## Notes", "\n".join(f"- {n}" for n in notes)]
    plots = [f for f in files if f.lower().endswith(PLOT_SUFFIXES) and f not in shown
             and not f.startswith(f"{EVAL_FOLDER}/")]
    if plots:
        sections += ["## Plots", "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)]
    sections += _sweep_sections(Path(run_dir))
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


SWEEP_FOLDER = "sweep"  # the best run of `sft-hub sweep`: its leaderboard and plots


def _sweep_sections(run_dir: Path) -> list[str]:
    """The leaderboard of the sweep this run won (``sweep/leaderboard.md``), if it did."""
    try:
        text = (run_dir / SWEEP_FOLDER / "leaderboard.md").read_text(encoding="utf-8")
    except OSError:
        return []
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    plots = sorted(p.name for p in (run_dir / SWEEP_FOLDER).glob("*.png"))
    intro = ("This model is the best trial of an `sft-hub sweep` (selected on the validation "
             "split; every trial below, and the plots "
             + ", ".join(f"`{SWEEP_FOLDER}/{p}`" for p in plots) + " in this repository).")
    return ["## Hyperparameter sweep", intro + "\n" + "\n".join(lines)]
