"""The Hugging Face Hub: the pre-training token check, pushing a run directory, recipes from hf://.

- :func:`preflight` runs before training when ``hub.push`` is set: a token exists, is valid, and
  can write to ``hub.repo_id`` (the repo is created if needed). It fails in seconds, not after an
  hour of training.
- :func:`push_run` uploads a finished run directory in one commit: the weights in the form asked
  for, the processor, ``recipe.yaml`` (with the repo's own id filled in), metrics and a model card.
  If it fails, the run directory is untouched and the error gives the exact ``sft-hub push`` command
  that retries.
- :func:`fetch_recipe` / :func:`recipe_from_model_repo` turn ``hf://`` references into recipe files.
  Only the YAML file is downloaded; recipes are data and loading one never runs code.

The token comes from ``HF_TOKEN`` or the user's ``hf auth login``; it is passed to the client in
memory only, never written to a file, a log, a card or an error message.
Nothing heavy is imported at module level (``sft-hub validate`` imports the recipe loader, which
imports this module for hf:// references).
"""
from __future__ import annotations

import re
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

from .errors import HubError, RunDirError

if TYPE_CHECKING:  # pragma: no cover
    from .recipe.schema import HubSpec

PUSH_FORMS = ("model", "adapter", "merged", "both")
HF_PREFIX = "hf://"
REPO_TYPE_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}
RECIPE_FILE = "recipe.yaml"
ADAPTER_DIR = "adapter"
# Run-directory entries that are bookkeeping, not part of the published model.
NOT_PUSHED = {"checkpoints", ".staging", "run_info.json.tmp", "README.md", RECIPE_FILE, ADAPTER_DIR}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
TOKEN_HINT = ("export HF_TOKEN=hf_... (a token with write access, from "
              "https://huggingface.co/settings/tokens) or run `hf auth login`")


# -- hf:// references ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HubRef:
    """``hf://[datasets/|spaces/]namespace/name[/path/in/repo][@revision]``."""

    repo_id: str
    path: str = ""
    revision: Optional[str] = None
    repo_type: str = "model"

    def url(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        path = f"/{self.path}" if self.path else ""
        return f"{HF_PREFIX}{prefix}{self.repo_id}{path}" + (f"@{self.revision}" if self.revision else "")


def parse_hf_ref(ref: str) -> HubRef:
    """Parse an ``hf://`` reference; the revision, if any, comes last (``...recipe.yaml@v1``)."""
    text = str(ref)
    if not text.startswith(HF_PREFIX):
        raise HubError(f"not an hf:// reference: {text!r}", hint="write hf://<org>/<repo>/<path>.yaml")
    body, _, revision = text[len(HF_PREFIX):].partition("@")
    parts = [p for p in body.split("/") if p]
    repo_type = "model"
    if parts and parts[0] in REPO_TYPE_PREFIXES:
        repo_type = REPO_TYPE_PREFIXES[parts.pop(0)]
    if len(parts) < 2 or not all(re.fullmatch(r"[\w.\-]+", p) for p in parts[:2]):
        raise HubError(f"{text!r} does not name a Hub repository", file=text,
                       hint="write hf://<org>/<repo>/<path/to/recipe.yaml>[@revision]")
    return HubRef(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), revision or None, repo_type)


def fetch_recipe(ref: str) -> Path:
    """Download the recipe an ``hf://org/repo/path/recipe.yaml[@rev]`` reference names; its local path."""
    from huggingface_hub import hf_hub_download

    hub_ref = parse_hf_ref(ref)
    if not hub_ref.path.endswith((".yaml", ".yml")):
        raise HubError(f"{ref!r} does not point to a .yaml file", file=str(ref),
                       hint=f"add the recipe's path in the repo, e.g. {hub_ref.url().split('@')[0]}/"
                            f"{RECIPE_FILE}; to re-run a pushed model use `sft-hub train --from {ref}`")
    with hub_errors(f"cannot fetch recipe {ref}", file=str(ref), ref=hub_ref):
        return Path(hf_hub_download(hub_ref.repo_id, hub_ref.path, revision=hub_ref.revision,
                                    repo_type=hub_ref.repo_type))


def recipe_from_model_repo(ref: str) -> str:
    """The ``hf://`` reference of the recipe a pushed model was trained with, pinned to its commit.

    ``hf://org/model-repo[@rev]`` -> ``hf://org/model-repo/recipe.yaml@<commit sha>``: the exact
    recipe that produced the weights in that revision, even if the branch moves on later.
    """
    from huggingface_hub import HfApi

    hub_ref = parse_hf_ref(ref)
    if hub_ref.path:
        raise HubError(f"--from takes a model repository, not a file: {ref!r}", file=str(ref),
                       hint=f"use `sft-hub train {ref}` to run a recipe file")
    with hub_errors(f"cannot read {ref}", file=str(ref), ref=hub_ref):
        info = HfApi().repo_info(hub_ref.repo_id, revision=hub_ref.revision, repo_type=hub_ref.repo_type)
    if RECIPE_FILE not in {s.rfilename for s in info.siblings or []}:
        raise HubError(f"{hub_ref.repo_id} has no {RECIPE_FILE}, so it was not pushed by sft-hub",
                       file=str(ref), hint="only repositories pushed with sft-hub carry their recipe")
    return HubRef(hub_ref.repo_id, RECIPE_FILE, info.sha, hub_ref.repo_type).url()


# -- errors and tokens ----------------------------------------------------------------------------

def _is_network_error(error: BaseException) -> bool:
    return any(cls.__name__ in ("TransportError", "ConnectionError", "TimeoutError")
               for cls in type(error).__mro__)


def _reason(error: BaseException) -> str:
    """One line about what went wrong, without the client's multi-line boilerplate."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    server = getattr(error, "server_message", None)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = f"HTTP {status}: {server or first}" if status else first
    return text.rstrip(".")


@contextmanager
def hub_errors(what: str, *, file: Optional[str] = None, field: Optional[str] = None,
               ref: Optional[HubRef] = None, hint: Optional[str] = None) -> Iterator[None]:
    """Turn huggingface_hub / network errors into one HubError saying what failed and the fix."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        yield
    except HubError:
        raise
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as e:
        raise HubError(f"{what}: HF_HUB_OFFLINE is set and it is not in the local cache",
                       file=file, field=field, hint=hint or "unset HF_HUB_OFFLINE (and check the network)") from e
    except GatedRepoError as e:
        raise HubError(f"{what}: the repository is gated ({_reason(e)})", file=file, field=field,
                       hint=hint or "request access on the repository page, then use a token of that account") from e
    except RepositoryNotFoundError as e:
        name = ref.repo_id if ref else "the repository"
        raise HubError(f"{what}: {name} does not exist on {constants.ENDPOINT} (or is private and the "
                       "token cannot see it)", file=file, field=field,
                       hint=hint or f"check the repository id; for a private one {TOKEN_HINT}") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{what}: revision {ref.revision if ref else ''!s} does not exist", file=file,
                       field=field, hint=hint or "use an existing branch, tag or commit after @") from e
    except EntryNotFoundError as e:
        raise HubError(f"{what}: {ref.path if ref else 'the file'} is not in {ref.repo_id if ref else 'the repo'}"
                       + (f"@{ref.revision}" if ref and ref.revision else ""), file=file, field=field,
                       hint=hint or "check the path inside the repository") from e
    except Exception as e:
        if _is_network_error(e):
            raise HubError(f"{what}: cannot reach {constants.ENDPOINT} ({_reason(e)})", file=file,
                           field=field, hint=hint or "check the network connection (and HF_ENDPOINT if set)") from e
        if type(e).__module__.startswith("huggingface_hub"):
            raise HubError(f"{what}: {_reason(e)}", file=file, field=field, hint=hint) from e
        raise


def get_token() -> str:
    """The token huggingface_hub would use (``HF_TOKEN``, then ``hf auth login``); HubError if none."""
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise HubError("no Hugging Face token found; pushing needs one with write access",
                       field="hub.push", hint=f"{TOKEN_HINT}; or remove hub.push to train without pushing")
    return token


def _is_main_process() -> bool:
    """True unless accelerate is initialised and says this is not the main process."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return True
    if PartialState._shared_state == {}:  # not initialised: a plain single-process call
        return True
    return PartialState().is_main_process


# -- preflight ------------------------------------------------------------------------------------

def preflight(hub: "HubSpec", *, token: Optional[str] = None) -> str:
    """Check, before training, that the push at the end can succeed; returns the user name.

    Token present and valid, not read-only, repository created (or already there) and writable,
    branch ``hub.revision`` present or creatable. Raises HubError naming the field to fix.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    if hub.push is None:
        return ""
    if not hub.repo_id:
        raise HubError("hub.push is set but hub.repo_id is not", field="hub.repo_id",
                       hint="set hub.repo_id: <user or organisation>/<model name>")
    try:
        validate_repo_id(hub.repo_id)
        if hub.repo_id.count("/") != 1:
            raise ValueError("use the form <namespace>/<name>")
    except ValueError as e:
        raise HubError(f"invalid Hub repository id {hub.repo_id!r}: {e}", field="hub.repo_id",
                       hint="use <user or organisation>/<name> with letters, digits, '-', '_', '.'") from None
    if constants.is_offline_mode():
        raise HubError("hub.push is set but HF_HUB_OFFLINE is on, so nothing can be pushed",
                       field="hub.push", hint="unset HF_HUB_OFFLINE, or remove hub.push and run "
                                              "`sft-hub push RUN_DIR --repo-id ...` later")
    token = token or get_token()
    api = HfApi(token=token)
    namespace = hub.repo_id.split("/")[0]
    with hub_errors("checking the Hugging Face token", field="hub.push"):
        try:
            me = api.whoami()
        except HfHubHTTPError as e:
            if e.response.status_code == 401:
                raise HubError("the Hugging Face token was rejected (invalid or expired)", field="hub.push",
                               hint=f"{TOKEN_HINT}; HF_TOKEN takes precedence over `hf auth login`") from None
            raise
    user = me.get("name", "?")
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"the Hugging Face token of {user!r} is read-only; pushing to {hub.repo_id} "
                       "needs write access", field="hub.push", hint=TOKEN_HINT)
    writable = [user] + [o["name"] for o in me.get("orgs", []) if o.get("roleInOrg") in ("write", "admin")]
    no_write = HubError(
        f"{user!r} cannot write to {hub.repo_id}", field="hub.repo_id",
        hint=f"push under a namespace you can write to ({', '.join(writable)}), or use a token "
             f"with write access to {namespace!r}")
    with hub_errors(f"preparing {hub.repo_id}", field="hub.repo_id"):
        try:
            api.create_repo(hub.repo_id, private=hub.private, exist_ok=True)
            api.auth_check(hub.repo_id, write=True)
            if hub.revision and hub.revision != "main":
                api.create_branch(hub.repo_id, branch=hub.revision, exist_ok=True)
        except HfHubHTTPError as e:
            if e.response.status_code in (401, 403):
                raise no_write from None
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
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def plan_files(run_dir: Path, form: str) -> dict[str, Path]:
    """{path in repo: local file} for pushing ``run_dir`` in ``form`` (model|adapter|merged|both).

    The run directory holds at its root either a full model (full fine-tuning, or a merged
    adapter) or an adapter, and with ``strategy.save: both`` the adapter in ``adapter/``.
    ``model`` pushes what the run saved; ``adapter`` and ``merged`` push that one form at the repo
    root; ``both`` pushes the merged model at the root and the adapter in ``adapter/``.
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
    if not adapter and (sub / "adapter_config.json").is_file():
        adapter = {k: v for k, v in _files(sub).items() if k != "README.md"}
    elif (sub / "adapter_config.json").is_file() and form == "model":
        common.update({k: v for k, v in _files(sub, ADAPTER_DIR + "/").items() if not k.endswith("README.md")})
    has_full = bool(full) and (run_dir / "config.json").is_file()
    has_adapter = "adapter_config.json" in adapter
    hint_save = "set strategy.save: both in the recipe to keep both forms (the run must be trained again)"
    if form == "model":
        if not (has_full or has_adapter):
            raise RunDirError(f"{run_dir} holds no model weights to push", file=str(run_dir),
                              hint="pass the directory of a finished `sft-hub train` run")
        return {**common, **full, **(adapter if has_adapter and not has_full else {})}
    if form == "adapter":
        if not has_adapter:
            raise RunDirError(f"{run_dir} holds no adapter (it was trained without one, or saved "
                              "merged weights only)", file=str(run_dir), field="hub.push",
                              hint=f"push the model instead (--form model), or {hint_save}")
        return {k: v for k, v in {**common, **adapter}.items() if k != "config.json" or not has_full}
    if not has_full:
        raise RunDirError(f"{run_dir} holds an adapter but no merged model", file=str(run_dir),
                          field="hub.push", hint=f"push the adapter (--form adapter), or {hint_save}")
    if form == "merged":
        return {**common, **full}
    if not has_adapter:  # both
        raise RunDirError(f"{run_dir} holds no adapter next to the model, so `both` cannot be pushed",
                          file=str(run_dir), field="hub.push", hint=f"push --form model, or {hint_save}")
    return {**common, **full, **{f"{ADAPTER_DIR}/{k}": v for k, v in adapter.items()}}


def _read_run_recipe(run_dir: Path) -> dict:
    from .recipe.yaml_io import parse_yaml

    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no {RECIPE_FILE}, so it is not an sft-hub run directory",
                          file=str(run_dir), hint="pass the directory of a finished `sft-hub train` run")
    data = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    return data if isinstance(data, dict) else {}


def recipe_for_repo(recipe: dict, repo_id: str, form: str, revision: Optional[str]) -> str:
    """The run's resolved recipe with the repository it now lives in filled in."""
    from .recipe.yaml_io import dump_yaml

    hub = dict(recipe.get("hub") or {})
    hub.update(repo_id=repo_id, push=form)
    if revision and revision != "main":
        hub["revision"] = revision
    return dump_yaml({**recipe, "hub": hub})


def push_command(run_dir: Union[str, Path], repo_id: str, form: str, revision: Optional[str] = None) -> str:
    """The ``sft-hub push`` command line that (re)does this push."""
    args = ["sft-hub", "push", str(run_dir), "--repo-id", repo_id, "--form", form]
    if revision and revision != "main":
        args += ["--revision", revision]
    return shlex.join(args)


def _check_no_token(files: dict[str, Path], generated: dict[str, bytes], token: str) -> None:
    """Refuse to publish a file that contains the token (weights files are not text; skipped)."""
    needle = token.encode()
    for path_in_repo, content in generated.items():
        if needle in content:
            raise HubError(f"refusing to push: {path_in_repo} would contain the Hugging Face token")
    for path_in_repo, local in files.items():
        if not local.name.endswith(WEIGHT_SUFFIXES) and needle in local.read_bytes():
            raise HubError(f"refusing to push: {local} contains the Hugging Face token",
                           hint="remove the token from that file; tokens belong in HF_TOKEN only")


def push_run(run_dir: Union[str, Path], hub: Optional["HubSpec"] = None, *, repo_id: Optional[str] = None,
             form: Optional[str] = None, revision: Optional[str] = None, private: Optional[bool] = None,
             commit_message: Optional[str] = None) -> Optional[PushResult]:
    """Push a finished run directory to the Hub in one commit; returns what was pushed.

    Settings come from the arguments, else from ``hub`` (the recipe's ``hub:`` section), else from
    the run's own ``recipe.yaml``. Under a multi-process launch only the main process pushes (the
    others return None). The repository's branch then holds exactly this run: files of an earlier
    push that this one does not have are removed in the same commit. On failure the run directory
    is left as it was and the HubError's hint is the exact command that retries.
    """
    from .card import build_card
    from .run_dir import is_complete

    if not _is_main_process():
        return None
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist", file=str(run_dir))
    if not is_complete(run_dir):
        raise RunDirError(f"{run_dir} is not a finished run (run_info.json is missing or not complete)",
                          file=str(run_dir), hint="push the directory of a run that finished training")
    recipe = _read_run_recipe(run_dir)
    saved = recipe.get("hub") or {}
    spec = hub.model_dump() if hub is not None else {}

    def setting(name: str, given):
        return given if given is not None else spec.get(name) if spec.get(name) is not None else saved.get(name)

    repo_id = setting("repo_id", repo_id)
    form = setting("push", form) or "model"
    revision = setting("revision", revision) or "main"
    private = setting("private", private)
    private = True if private is None else private
    if not repo_id:
        raise HubError("no repository to push to", field="hub.repo_id",
                       hint=f"pass --repo-id <namespace>/<name> (sft-hub push {run_dir} --repo-id ...)")
    if form not in PUSH_FORMS:
        raise HubError(f"unknown push form {form!r}", field="hub.push", hint=f"one of {', '.join(PUSH_FORMS)}")
    retry = push_command(run_dir, repo_id, form, revision)
    files = plan_files(run_dir, form)
    generated = {RECIPE_FILE: recipe_for_repo(recipe, repo_id, form, revision).encode(),
                 "README.md": build_card(run_dir, repo_id=repo_id, revision=revision,
                                         files=[*files, RECIPE_FILE]).encode()}
    try:
        token = get_token()
        _check_no_token(files, generated, token)
        result = _upload(files, generated, repo_id=repo_id, revision=revision, private=private, token=token,
                         message=setting("commit_message", commit_message) or _default_message(run_dir, form))
    except Exception as e:
        reason = e.message if isinstance(e, HubError) else _reason(e)
        raise HubError(f"pushing {run_dir} to {repo_id} failed: {reason}",
                       hint=f"the run directory is complete and unchanged; after fixing the cause, "
                            f"retry with:\n    {retry}") from e
    print(f"pushed {len(result.files)} files to {result.url}")
    return result


def _default_message(run_dir: Path, form: str) -> str:
    import json

    try:
        info = json.loads((run_dir / "run_info.json").read_text())
    except (OSError, ValueError):
        info = {}
    what = {"adapter": "adapter", "merged": "merged model", "both": "merged model and adapter"}.get(form, "model")
    return f"sft-hub: {info.get('task', 'fine-tuned')} {what} ({info.get('strategy', '?')} on {info.get('base_model', '?')})"


def _upload(files: dict[str, Path], generated: dict[str, bytes], *, repo_id: str, revision: str,
            private: bool, token: str, message: str) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    with hub_errors(f"pushing to {repo_id}", field="hub.repo_id"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        wanted = set(files) | set(generated)
        stale = [p for p in api.list_repo_files(repo_id, revision=revision)
                 if p not in wanted and p != ".gitattributes"]
        operations = ([CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files.items()]
                      + [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in generated.items()]
                      + [CommitOperationDelete(path_in_repo=p) for p in stale])
        commit = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    return PushResult(repo_id, revision, commit.commit_url, sorted(wanted))
