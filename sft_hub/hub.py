"""The Hugging Face Hub: the pre-training token check, pushing a run directory, recipes from hf://.

- :func:`preflight` runs before training when ``hub.push`` is set: the run will hold the form asked
  for, a token exists, is valid and can write to ``hub.repo_id`` (the repo is created if needed).
  It fails in seconds, not after an hour of training.
- :func:`push_run` uploads a finished run directory in one commit: the weights in the form asked
  for, the processor, ``recipe.yaml`` (with the repo's own id filled in), metrics and a model card.
  If it fails, the run directory is untouched and the error gives the exact ``sft-hub push``
  command that retries.
- ``hf://`` references (parsing, fetching recipes, error messages) are :mod:`sft_hub.hub_refs`,
  which the recipe loader uses without importing this module.

The token comes from ``HF_TOKEN`` or the user's ``hf auth login``; it is passed to the client in
memory only, never written to a file, a log, a card or an error message.
Nothing heavy is imported at module level.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .card import RunRecord, build_card
from .errors import HubError, RecipeError, RunDirError
from .hub_refs import RECIPE_FILE, TOKEN_HINT, hub_errors, is_hub_ref, reason_of
from .portable import check_nothing_private, guarded_texts, portable_recipe, publishable_texts
from .recipe.yaml_io import dump_yaml
from .run_dir import is_complete
from .strategies import strategy_contract
from .strategies.base import PUSHABLE

if TYPE_CHECKING:  # pragma: no cover
    from .recipe.schema import HubSpec

PUSH_FORMS = ("model", "adapter", "merged", "both")
ADAPTER_DIR = "adapter"
# Run-directory entries that are bookkeeping (or regenerated), not part of the published model.
NOT_PUSHED = {"checkpoints", ".staging", "run_info.json.tmp", "README.md", RECIPE_FILE, ADAPTER_DIR}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
RUN_DIR_HINT = "pass the directory of a finished `sft-hub train` run"


def get_token() -> str:
    """The token huggingface_hub would use (``HF_TOKEN``, then ``hf auth login``); else HubError."""
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise HubError("no Hugging Face token found; pushing needs one with write access",
                       field="hub.push",
                       hint=f"{TOKEN_HINT}; or remove hub.push to train without pushing")
    return token


def _is_main_process() -> bool:
    """True unless accelerate is initialised and says this is not the main process."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return True
    # accelerate has no public "is PartialState initialised" (PartialState() would initialise it,
    # accelerate.state.is_initialized asks AcceleratorState only), hence its shared state here.
    if PartialState._shared_state == {}:  # not initialised: a plain single-process call
        return True
    return PartialState().is_main_process


# -- preflight ------------------------------------------------------------------------------------

def check_push_form(push: Optional[str], strategy: Any) -> None:
    """The run will hold what ``hub.push`` asks for, as the strategy's contract declares it
    (``strategy``: a recipe's ``strategy:`` section or a built strategy). No network; a
    RecipeError names the fix."""
    if push is None:
        return
    contract = strategy_contract(strategy)
    if push in contract.push_forms:
        return
    needs = [form for form in contract.save_forms if push in PUSHABLE[form]]
    if not needs:
        raise RecipeError(f"hub.push: {push} needs an adapter, but strategy {contract.name!r} "
                          "trains the model itself", field="hub.push",
                          hint=f"use hub.push: {' or '.join(contract.push_forms)} (or an adapter "
                               "strategy, e.g. lora)")
    raise RecipeError(f"hub.push: {push} needs strategy.save: {' or '.join(needs)} "
                      f"(it is {contract.saves!r})", field="hub.push",
                      hint=f"set strategy.save: {needs[-1]}, or hub.push: {contract.saves}")


def _check_repo_id(repo_id: Optional[str]) -> None:
    from huggingface_hub.utils import validate_repo_id

    if not repo_id:
        raise HubError("hub.push is set but hub.repo_id is not", field="hub.repo_id",
                       hint="set hub.repo_id: <user or organisation>/<model name>")
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise ValueError("use the form <namespace>/<name>")
    except ValueError as e:
        raise HubError(f"invalid Hub repository id {repo_id!r}: {e}", field="hub.repo_id",
                       hint="<user or organisation>/<name> with letters, digits, '-', '_', '.'"
                       ) from None


def preflight(hub: "HubSpec", *, strategy: Any = None, token: Optional[str] = None) -> str:
    """Check, before training, that the push at the end can succeed; returns the user name.

    The run will hold the form ``hub.push`` asks for (when ``strategy`` is given), the token is
    present and valid, not read-only, the repository is created (or already there) and writable,
    branch ``hub.revision`` is present or creatable. Raises an error naming the field to fix.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if hub.push is None:
        return ""
    if strategy is not None:
        check_push_form(hub.push, strategy)
    _check_repo_id(hub.repo_id)
    if constants.is_offline_mode():
        raise HubError("hub.push is set but HF_HUB_OFFLINE is on, so nothing can be pushed",
                       field="hub.push", hint="unset HF_HUB_OFFLINE, or remove hub.push and run "
                                              "`sft-hub push RUN_DIR --repo-id ...` later")
    api = HfApi(token=token or get_token())
    with hub_errors("checking the Hugging Face token", field="hub.push"):
        try:
            me = api.whoami()
        except HfHubHTTPError as e:
            if e.response.status_code == 401:
                raise HubError("the Hugging Face token was rejected (invalid or expired)",
                               field="hub.push", hint=f"{TOKEN_HINT}; HF_TOKEN takes precedence "
                                                      "over `hf auth login`") from None
            raise
    user = me.get("name", "?")
    if ((me.get("auth") or {}).get("accessToken") or {}).get("role") == "read":
        raise HubError(f"the Hugging Face token of {user!r} is read-only; pushing to "
                       f"{hub.repo_id} needs write access", field="hub.push", hint=TOKEN_HINT)
    writable = [user] + [o["name"] for o in me.get("orgs", [])
                         if o.get("roleInOrg") in ("write", "admin")]
    with hub_errors(f"preparing {hub.repo_id}", field="hub.repo_id"):
        try:
            api.create_repo(hub.repo_id, private=hub.private, exist_ok=True)
            api.auth_check(hub.repo_id, write=True)
            if hub.revision and hub.revision != "main":
                api.create_branch(hub.repo_id, branch=hub.revision, exist_ok=True)
        except HfHubHTTPError as e:
            if e.response.status_code in (401, 403):
                raise HubError(f"{user!r} cannot write to {hub.repo_id}", field="hub.repo_id",
                               hint=f"push under a namespace you can write to "
                                    f"({', '.join(writable)}), or use a token with write access "
                                    f"to {hub.repo_id.split('/')[0]!r}") from None
            raise
    return user


# -- push -----------------------------------------------------------------------------------------

@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_url: str
    files: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        from huggingface_hub import constants

        tree = f"/tree/{self.revision}" if self.revision != "main" else ""
        return f"{constants.ENDPOINT}/{self.repo_id}{tree}"


def _is_full_weights(path: Path) -> bool:
    name = path.name
    return name.endswith(WEIGHT_SUFFIXES + (".index.json",)) and not name.startswith("adapter_")


def _files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under ``folder`` as {path in repo: local path}."""
    return {prefix + p.relative_to(folder).as_posix(): p
            for p in sorted(folder.rglob("*")) if p.is_file()}


def plan_files(run_dir: Path, form: str) -> dict[str, Path]:
    """{path in repo: local file} for pushing ``run_dir`` in ``form`` (model|adapter|merged|both).

    The run directory holds at its root either a full model (full fine-tuning, or a merged
    adapter) or an adapter, and with ``strategy.save: both`` the adapter in ``adapter/``.
    ``model`` pushes what the run saved, laid out as in the run; ``adapter`` and ``merged`` push
    that one form at the repo root; ``both`` pushes the merged model at the root and the adapter
    in ``adapter/``.
    """
    common: dict[str, Path] = {}
    full: dict[str, Path] = {}
    adapter: dict[str, Path] = {}
    for entry in sorted(run_dir.iterdir()):
        if entry.name in NOT_PUSHED or entry.name.startswith("."):
            continue
        if entry.is_dir():
            common.update(_files(entry, entry.name + "/"))
        elif entry.name.startswith("adapter_"):
            adapter[entry.name] = entry
        elif _is_full_weights(entry):
            full[entry.name] = entry
        else:
            common[entry.name] = entry
    sub = run_dir / ADAPTER_DIR
    if not adapter and (sub / "adapter_config.json").is_file():  # minus peft's stub README
        adapter = {k: v for k, v in _files(sub).items() if k != "README.md"}
    has_full = bool(full) and (run_dir / "config.json").is_file()
    has_adapter = "adapter_config.json" in adapter
    if form == "model":
        if not (has_full or has_adapter):
            raise RunDirError(f"{run_dir} holds no model weights to push", file=str(run_dir),
                              hint=RUN_DIR_HINT)
        form = "both" if has_full and has_adapter else "merged" if has_full else "adapter"
    retrain = "set strategy.save: both in the recipe to keep both forms (and train again)"
    if form == "adapter":
        if not has_adapter:
            raise RunDirError(f"{run_dir} holds no adapter (it was trained without one, or saved "
                              "merged weights only)", file=str(run_dir), field="hub.push",
                              hint=f"push the model instead (--form model), or {retrain}")
        # the merged model's config.json would make the repository look like a broken full model
        return {k: v for k, v in {**common, **adapter}.items()
                if k != "config.json" or not has_full}
    if not has_full:
        raise RunDirError(f"{run_dir} holds an adapter but no merged model", file=str(run_dir),
                          field="hub.push",
                          hint=f"push the adapter (--form adapter), or {retrain}")
    if form == "merged":
        return {**common, **full}
    if not has_adapter:  # both
        raise RunDirError(f"{run_dir} holds no adapter next to the model, so `both` cannot be "
                          "pushed", file=str(run_dir), field="hub.push",
                          hint=f"push --form model, or {retrain}")
    return {**common, **full, **{f"{ADAPTER_DIR}/{k}": v for k, v in adapter.items()}}


def recipe_for_repo(recipe: dict, repo_id: str, form: str, revision: Optional[str], *,
                    private: bool = True, run_dir: Optional[Path] = None,
                    info: Optional[dict] = None) -> str:
    """The run's resolved recipe as pushed: written to re-run elsewhere (local data paths relative
    to the directory the run started in, no output.dir, hub: the repository it now lives in;
    :func:`sft_hub.portable.portable_recipe`), with a header saying how to re-run it."""
    notes: list[str] = []
    data = portable_recipe(recipe, Path(run_dir or "."), info or {}, repo_id=repo_id,
                           private=private, revision=revision, notes=notes)
    header = [f"# Recipe of {repo_id} (pushed by sft-hub as {form}). Re-run it from a clone of the",
              "# project, where local paths below are relative to the directory you run in:",
              f"#   sft-hub train --from hf://{repo_id}",
              "# (data elsewhere: add data.files.train=<path> ... on the command line)"]
    header += [f"# note: {n}" for n in notes]
    return "\n".join(header) + "\n" + dump_yaml(data)


def push_command(run_dir: Union[str, Path], repo_id: str, form: str,
                 revision: Optional[str] = None) -> str:
    """The ``sft-hub push`` command line that (re)does this push."""
    args = ["sft-hub", "push", str(run_dir), "--repo-id", repo_id, "--form", form]
    if revision and revision != "main":
        args += ["--revision", revision]
    return shlex.join(args)


def _check_no_token(files: dict[str, Path], generated: dict[str, bytes], token: str) -> None:
    """Refuse to publish a file that contains the token (weights files are not text; skipped).

    Real tokens are long random strings; a short one (an invalid token, rejected by the Hub
    anyway) would match ordinary words in a vocabulary, so it is not searched for."""
    if len(token) < 16:
        return
    needle = token.encode()
    for path_in_repo, content in generated.items():
        if needle in content:
            raise HubError(f"refusing to push: {path_in_repo} would contain the Hugging Face token")
    for local in files.values():
        if not local.name.endswith(WEIGHT_SUFFIXES) and needle in local.read_bytes():
            raise HubError(f"refusing to push: {local} contains the Hugging Face token",
                           hint="remove the token from that file; tokens belong in HF_TOKEN only")


def push_run(run_dir: Union[str, Path], hub: Optional["HubSpec"] = None, *,
             repo_id: Optional[str] = None, form: Optional[str] = None,
             revision: Optional[str] = None, private: Optional[bool] = None,
             commit_message: Optional[str] = None) -> Optional[PushResult]:
    """Push a finished run directory to the Hub in one commit; returns what was pushed.

    Settings come from the arguments, else from ``hub`` (the recipe's ``hub:`` section), else from
    the run's own ``recipe.yaml``. Under a multi-process launch only the main process pushes (the
    others return None). The repository's branch then holds exactly this run: files of an earlier
    push that this one does not have are removed in the same commit. On failure the run directory
    is left as it was and the HubError's hint is the exact command that retries.
    """

    if not _is_main_process():
        return None
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file() or not is_complete(run_dir):
        raise RunDirError(f"{run_dir} is not a finished sft-hub run (no recipe.yaml, or no "
                          "complete run_info.json)", file=str(run_dir), hint=RUN_DIR_HINT)
    run = RunRecord.load(run_dir)
    given = {"repo_id": repo_id, "push": form, "revision": revision, "private": private,
             "commit_message": commit_message}
    run_hub = dict(run.section("hub"))
    if is_hub_ref(str(run.info.get("recipe", ""))):
        run_hub.pop("private", None)  # a Hub recipe's privacy describes its repo, not this push
    layers = (given, hub.model_dump() if hub is not None else {}, run_hub)
    settings = {k: next((layer[k] for layer in layers if layer.get(k) is not None), None)
                for k in given}
    repo_id, form = settings["repo_id"], settings["push"] or "model"
    revision = settings["revision"] or "main"
    if not repo_id:
        raise HubError("no repository to push to", field="hub.repo_id",
                       hint=f"sft-hub push {run_dir} --repo-id <namespace>/<name>")
    if form not in PUSH_FORMS:
        raise HubError(f"unknown push form {form!r}", field="hub.push",
                       hint=f"one of {', '.join(PUSH_FORMS)}")
    files = plan_files(run_dir, form)
    is_private = settings["private"] is not False
    pushed_recipe = recipe_for_repo(run.recipe, repo_id, form, revision, private=is_private,
                                    run_dir=run_dir, info=run.info)
    files, generated = publishable_texts(files, run_dir, run.base_model)  # no local paths
    generated.update({RECIPE_FILE: pushed_recipe.encode(),
                      "README.md": build_card(run_dir, repo_id=repo_id, revision=revision,
                                              files=[*files, *generated, RECIPE_FILE]).encode()})
    message = settings["commit_message"] or (
        f"sft-hub: {run.task} {form} ({run.strategy.get('name', 'full')} on {run.base_model})")
    try:
        token = get_token()
        _check_no_token(files, generated, token)
        check_nothing_private(guarded_texts(files, generated), run_dir)
        result = _upload(files, generated, repo_id=repo_id, revision=revision, token=token,
                         private=is_private, message=message)
    except Exception as e:
        reason = e.message if isinstance(e, HubError) else reason_of(e)
        raise HubError(f"pushing {run_dir} to {repo_id} failed: {reason}",
                       hint="the run directory is complete and unchanged; after fixing the cause, "
                            f"retry with:\n    {push_command(run_dir, repo_id, form, revision)}"
                       ) from e
    print(f"pushed {len(result.files)} files to {result.url}")
    return result


def _upload(files: dict[str, Path], generated: dict[str, bytes], *, repo_id: str, revision: str,
            private: bool, token: str, message: str) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    with hub_errors("", field="hub.repo_id"):  # push_run says what failed
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        wanted = set(files) | set(generated)
        stale = [p for p in api.list_repo_files(repo_id, revision=revision)
                 if p not in wanted and p != ".gitattributes"]
        operations = (
            [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files.items()]
            + [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data)
               for p, data in generated.items()]
            + [CommitOperationDelete(path_in_repo=p) for p in stale])
        commit = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    return PushResult(repo_id, revision, commit.commit_url, sorted(wanted))
