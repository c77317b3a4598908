"""Model-card pieces from a run's plain records (recipe sections, run_info, trainer_state): how to
reproduce it, the training data's licence and attribution, intended use and limitations, the
per-epoch results, the base model's Hub id of a timm model. :mod:`sft_hub.card` assembles them.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from ._version import __version__

URL_LABELS = ("repository", "source", "source code", "homepage")


def source_url() -> Optional[str]:
    """The project's repository URL, from the installed package's metadata (``[project.urls]``)."""
    try:
        urls = metadata.metadata("sft-hub").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    found = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        found[label.strip().lower()] = url.strip()
    return next((found[k] for k in URL_LABELS if found.get(k)), None)


def install_command(version: Optional[str] = None) -> str:
    """How to install sft-hub (it is not on PyPI): a clone of its repository, whose root is also
    where the shipped recipes' local data are found."""
    url = source_url() or "<the sft-hub repository>"
    return (f"git clone {url} sft-hub && cd sft-hub   # sft-hub is installed from its repository "
            f"(this run: version {version or __version__})\npip install .")


def reproduce(repo_id: str, revision: Optional[str], *, version: Optional[str],
              local_files: list[str]) -> str:
    at = f"@{revision}" if revision and revision != "main" else ""
    text = ("The exact recipe of this run is `recipe.yaml` in this repository. To train it "
            f"again:\n\n```bash\n{install_command(version)}\n"
            f"sft-hub train --from hf://{repo_id}{at}   # trains in runs/{repo_id.split('/')[-1]}\n"
            f"# the same: sft-hub train hf://{repo_id}/recipe.yaml{at}\n```\n\n"
            "A recipe from the Hub never pushes by itself: add `hub.push=model "
            "hub.repo_id=<you>/<name>` to publish the new run.")
    if local_files:
        text += (" The training data are local files (" + ", ".join(f"`{f}`" for f in local_files)
                 + "), read from the directory you run in (the sft-hub repository's root for its "
                 "shipped data); point at your copies with e.g. `data.files.train=path/to/train.csv`.")
    return text


def local_data_files(data: dict[str, Any]) -> list[str]:
    """The local data files of a recipe's ``data:`` (folder and file name, not a home path)."""
    files = data.get("files") or {}
    out = []
    for value in files.values():
        for v in (value if isinstance(value, list) else [value]):
            out.append("/".join(Path(str(v)).parts[-2:]))
    return out


def training_data(data: dict[str, Any]) -> Optional[str]:
    """The licence and attribution lines of the training data (``data.license``,
    ``data.citation``), when the recipe gives them."""
    lines = []
    if data.get("license"):
        lines.append(f"- Licence of the training data: {data['license']}")
    if data.get("citation"):
        citation = str(data["citation"]).strip()
        if "\n" in citation:
            lines.append("- Please credit the data as:\n\n```\n" + citation + "\n```")
        else:
            lines.append(f"- Please credit the data as: {citation}")
    return "\n".join(lines) or None


def intended_use(hub: dict[str, Any], task: str, labels: list[str], data_text: str) -> str:
    if hub.get("description"):
        return str(hub["description"]).strip()
    shown = ", ".join(f"`{label}`" for label in labels[:10]) + (" ..." if len(labels) > 10 else "")
    return (f"A **{task}** model for inputs like its training data ({data_text})"
            + (f", predicting one of: {shown}" if labels else "") + ". It was trained for this "
            "data set and these labels only; check it on your own data before relying on it.")


def limitations(has_test: bool) -> str:
    split = "the held-out test split" if has_test else "the validation split"
    return ("- The figures above are measured on " + split + " of the training data's own "
            "distribution; other sources, domains, languages or label definitions can score much "
            "lower.\n"
            "- The model inherits the biases and gaps of its base model and its training data, "
            "and knows only the labels it was trained with (an input of another kind still gets "
            "one of them).\n"
            "- Predictions are not calibrated guarantees: do not use it for decisions about "
            "people without human review.")


def epoch_rows(log_history: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list]]:
    """(header, rows) of the per-evaluation results: epoch, step, the training loss logged last
    before it, validation loss and the given metric keys (from ``trainer_state.json``)."""
    rows = []
    train_loss = None
    for entry in log_history:
        if "loss" in entry and "eval_loss" not in entry:
            train_loss = entry["loss"]
        if "eval_loss" in entry:
            epoch = entry.get("epoch")
            epoch = f"{epoch:.3g}" if isinstance(epoch, (int, float)) else epoch
            rows.append([epoch, entry.get("step"), train_loss, entry["eval_loss"],
                         *(entry.get(f"eval_{k}") for k in keys)])
    shown = [k for i, k in enumerate(keys) if any(r[4 + i] is not None for r in rows)]
    rows = [r[:4] + [r[4 + keys.index(k)] for k in shown] for r in rows]
    return ["epoch", "step", "training loss", "validation loss", *shown], rows


def timm_hub_id(name: str) -> Optional[str]:
    """The Hub id of a timm model's pretrained weights (``efficientnet_lite0`` ->
    ``timm/efficientnet_lite0.ra_in1k``); None when timm does not know it."""
    if name.startswith("hf-hub:"):
        return name[len("hf-hub:"):].split("@")[0]
    if "/" in name:
        return name
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unknown name, or timm missing: no base_model
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None
