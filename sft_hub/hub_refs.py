"""``hf://`` references: parse them, fetch the recipe file one names, and turn huggingface_hub errors
into one message with the fix.

Small and light on purpose: the recipe loader uses it to read ``hf://`` recipes, and the Hub pusher
(:mod:`sft_hub.hub`) builds on it. Only the YAML file a reference names is downloaded; recipes are
data and loading one never runs code. huggingface_hub is imported inside the functions.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .errors import HubError

HF_PREFIX = "hf://"
REPO_TYPE_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}
RECIPE_FILE = "recipe.yaml"
TOKEN_HINT = ("export HF_TOKEN=hf_... (a token with write access, from "
              "https://huggingface.co/settings/tokens) or run `hf auth login`")


def is_hub_ref(ref: str) -> bool:
    return str(ref).startswith(HF_PREFIX)


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
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{prefix}{self.repo_id}{path}{revision}"


def parse_hf_ref(ref: str) -> HubRef:
    """Parse an ``hf://`` reference; the revision, if any, comes last (``...recipe.yaml@v1``)."""
    text = str(ref)
    usage = "write hf://<org>/<repo>/<path/to/recipe.yaml>[@revision]"
    if not text.startswith(HF_PREFIX):
        raise HubError(f"not an hf:// reference: {text!r}", hint=usage)
    body, _, revision = text[len(HF_PREFIX):].partition("@")
    parts = [p for p in body.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\\" in body:
        raise HubError(f"{text!r} has a '..' or '.' segment (or a backslash); an hf:// reference "
                       "names a file inside one repository", file=text,
                       hint="write the file's full path inside the repository, e.g. "
                            "hf://org/repo/recipes/base.yaml (an extends beside a Hub recipe is "
                            "relative to its folder and may not climb out of it)")
    repo_type = "model"
    if parts and parts[0] in REPO_TYPE_PREFIXES:
        repo_type = REPO_TYPE_PREFIXES[parts.pop(0)]
    if len(parts) < 2 or not all(re.fullmatch(r"[\w.\-]+", p) for p in parts[:2]):
        raise HubError(f"{text!r} does not name a Hub repository", file=text, hint=usage)
    return HubRef(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), revision or None, repo_type)


def fetch_recipe(ref: str) -> Path:
    """Download the recipe ``hf://org/repo/path/recipe.yaml[@rev]`` names; its local path."""
    from huggingface_hub import hf_hub_download

    hub_ref = parse_hf_ref(ref)
    if not hub_ref.path.endswith((".yaml", ".yml")):
        example = HubRef(hub_ref.repo_id, RECIPE_FILE, hub_ref.revision, hub_ref.repo_type).url()
        raise HubError(f"{ref!r} does not point to a .yaml file", file=str(ref),
                       hint=f"give the recipe's path in the repo, e.g. {example}; to re-run a "
                            f"pushed model use `sft-hub train --from {ref}`")
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
        info = HfApi().repo_info(hub_ref.repo_id, revision=hub_ref.revision,
                                 repo_type=hub_ref.repo_type)
    if RECIPE_FILE not in {s.rfilename for s in info.siblings or []}:
        raise HubError(f"{hub_ref.repo_id} has no {RECIPE_FILE}, so it was not pushed by sft-hub",
                       file=str(ref),
                       hint="only repositories pushed with sft-hub carry their recipe")
    return HubRef(hub_ref.repo_id, RECIPE_FILE, info.sha, hub_ref.repo_type).url()


# -- errors and tokens ----------------------------------------------------------------------------

def _is_network_error(error: BaseException) -> bool:
    return any(cls.__name__ in ("TransportError", "ConnectionError", "TimeoutError")
               for cls in type(error).__mro__)


def reason_of(error: BaseException) -> str:
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

    repo = ref.repo_id if ref else "the repository"
    revision = f"@{ref.revision}" if ref and ref.revision else ""
    try:
        yield
    except HubError:
        raise
    except Exception as e:
        if isinstance(e, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
            problem, fix = ("HF_HUB_OFFLINE is set and it is not in the local cache",
                            "unset HF_HUB_OFFLINE (and check the network)")
        elif isinstance(e, GatedRepoError):
            problem, fix = (f"{repo} is gated ({reason_of(e)})",
                            "request access on the repository page, then use that account's token")
        elif isinstance(e, RepositoryNotFoundError):
            problem, fix = (f"{repo} does not exist on {constants.ENDPOINT} (or is private and the "
                            "token cannot see it)",
                            f"check the repository id; for a private one {TOKEN_HINT}")
        elif isinstance(e, RevisionNotFoundError):
            problem, fix = (f"revision {revision.lstrip('@') or '?'} of {repo} does not exist",
                            "use an existing branch, tag or commit after @")
        elif isinstance(e, EntryNotFoundError):
            problem, fix = (f"{ref.path if ref else 'the file'} is not in {repo}{revision}",
                            "check the path inside the repository")
        elif _is_network_error(e):
            problem, fix = (f"cannot reach {constants.ENDPOINT} ({reason_of(e)})",
                            "check the network connection (and HF_ENDPOINT if set)")
        elif type(e).__module__.startswith("huggingface_hub"):
            problem, fix = reason_of(e), None
        else:
            raise
        raise HubError(f"{what}: {problem}" if what else problem, file=file, field=field,
                       hint=hint or fix) from e
