"""A small Hugging Face Hub-compatible HTTP server, and the pytest fixture that points the real
``huggingface_hub`` client (and through it transformers, peft and timm) at it.

The public Hub is unreachable in tests, yet the push / download round trip must be exercised with
the real client over real HTTP. This server implements just the endpoints that client calls:

- ``GET /api/whoami-v2``; ``POST /api/repos/create``; ``DELETE /api/repos/delete``
- ``GET /api/{models,datasets,spaces}/<repo>[/revision/<rev>]`` (repo info)
- ``GET .../tree/<rev>[/<path>]``, ``POST .../paths-info/<rev>``, ``GET .../refs``
- ``POST|DELETE .../branch/<name>``, ``GET .../auth-check[/write]``
- ``POST .../preupload/<rev>`` and the NDJSON ``POST .../commit/<rev>`` (base64 files, LFS pointers,
  deletions)
- the LFS batch API (``<repo>.git/info/lfs/objects/batch``) with the ``basic`` transfer: an upload
  URL that needs no Authorization header (like a signed storage URL) and a ``verify`` action
- ``HEAD|GET /<repo>/resolve/<rev>/<path>`` with ``ETag``, ``X-Repo-Commit`` and, for LFS files,
  ``X-Linked-Etag`` / ``X-Linked-Size``; a missing file is ``404`` with
  ``X-Error-Code: EntryNotFound`` (transformers relies on it to skip optional files)
- ``POST /api/validate-yaml`` (README metadata must be a YAML mapping; ``model-index`` is checked)

It stores exactly what it is sent (every commit is a full snapshot, so old revisions stay
readable) and serves it back byte for byte. Auth is ``Authorization: Bearer <token>``: tokens are
``read`` or ``write``; writes need a write token of the namespace owner or of a writing member of
the organisation, so "can this token write to that repo?" can be tested for real.
Stdlib only (plus PyYAML for validate-yaml): ``ThreadingHTTPServer`` in a daemon thread.

Run it by hand with ``python tests/hub_server.py`` (prints the endpoint and a write token).
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # like the Hub: bigger files must go through LFS
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack",
                    "*.model", "*.npy", "*.npz", "*.pkl", "*.zip", "*.gz", "*.tar", "*.parquet",
                    "*.arrow", "*tfevents*"))


class HubHTTPError(Exception):
    """An error answer: status, the Hub's X-Error-Code (what the client dispatches on), message."""

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None, body: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.body = body


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Blob:
    """File content at one path. LFS files keep their bytes too; they are described by sha256."""

    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:  # git's blob id: of the pointer file for LFS files, as on the Hub
        return git_blob_oid(lfs_pointer(self.sha256, self.size) if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size,
                            "pointerSize": len(lfs_pointer(self.sha256, self.size))}
        return entry


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    files: dict[str, Blob]
    title: str
    description: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        oid = self.branches.get(revision, revision)
        if oid not in self.commits:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]


class HubStore:
    """Users, tokens, organisations, repositories and LFS objects, guarded by one lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (user, "read" | "write")
        self.orgs: dict[str, dict[str, str]] = {}  # org -> {user: role ("read"|"write"|"admin")}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.pending_uploads: dict[str, tuple[str, int]] = {}  # upload key -> (sha256, size)
        self._counter = itertools.count()

    # -- accounts ------------------------------------------------------------------------------
    def add_token(self, user: str, role: str = "write") -> str:
        token = f"hf_test_{role}_{secrets.token_hex(12)}"
        self.tokens[token] = (user, role)
        return token

    def add_org(self, org: str, members: dict[str, str]) -> None:
        self.orgs[org] = dict(members)

    def can_write(self, user: Optional[str], role: Optional[str], namespace: str) -> bool:
        if user is None or role != "write":
            return False
        return namespace == user or self.orgs.get(namespace, {}).get(user) in ("write", "admin")

    def can_read(self, user: Optional[str], repo: Repo) -> bool:
        namespace = repo.repo_id.split("/")[0]
        return (not repo.private or namespace == user
                or (user is not None and user in self.orgs.get(namespace, {})))

    # -- repositories --------------------------------------------------------------------------
    def new_commit(self, repo: Repo, parent: Optional[str], files: dict[str, Blob], title: str,
                   description: str = "") -> Commit:
        seed = json.dumps([repo.repo_id, parent, title, next(self._counter),
                           sorted((p, b.oid) for p, b in files.items())])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, files, title, description,
                        _now())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private, _now())
        initial = self.new_commit(repo, None, {".gitattributes": Blob(DEFAULT_GITATTRIBUTES.encode(), False)},
                                  "initial commit")
        repo.branches["main"] = initial.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Every file of a revision, as stored: what tests inspect after a push."""
        with self.lock:
            commit = self.repos[(repo_type, repo_id)].resolve(revision)
            return {path: blob.data for path, blob in commit.files.items()}


def _lfs_patterns(commit: Commit) -> list[str]:
    blob = commit.files.get(".gitattributes")
    if blob is None:
        return []
    return [line.split()[0] for line in blob.data.decode("utf-8", "replace").splitlines()
            if "filter=lfs" in line and line.split()]


def _matches(path: str, pattern: str) -> bool:
    # git: a pattern without "/" matches the file name at any depth
    target = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern.lstrip("/"))


def _is_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the sample is fine
        return e.start < len(sample) - 3
    return False


def _front_matter(text: str) -> Optional[str]:
    match = re.match(r"^---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|$)", text, re.S)
    return (match.group(1) or "") if match else None


def _model_index_errors(model_index: Any) -> list[str]:
    """The structure the Hub requires to render evaluation results."""
    if not isinstance(model_index, list) or not model_index:
        return ["model-index must be a non-empty list"]
    errors = []
    for i, entry in enumerate(model_index):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f"model-index[{i}].name must be a string")
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f"model-index[{i}].results must be a list")
            continue
        for j, result in enumerate(results):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance(result, dict):
                errors.append(f"{where} must be a mapping")
                continue
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f"{where}.task.type must be a string")
            dataset = result.get("dataset")
            if not (isinstance(dataset, dict) and isinstance(dataset.get("type"), str)
                    and isinstance(dataset.get("name"), str)):
                errors.append(f"{where}.dataset needs string `type` and `name`")
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics):
                errors.append(f"{where}.metrics must be a list of {{type, value}}")
    return errors


def validate_readme(content: str) -> list[str]:
    import yaml

    block = _front_matter(content)
    if block is None:
        return []
    try:
        metadata = yaml.safe_load(block)
    except yaml.YAMLError as e:
        return [f"Invalid YAML in metadata: {e}"]
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["Metadata must be a YAML mapping"]
    errors = []
    for key in ("license", "library_name", "pipeline_tag"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f"{key} must be a string")
    for key in ("tags", "datasets", "base_model", "language"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f"{key} must be a string or a list of strings")
    if "model-index" in metadata:
        errors += _model_index_errors(metadata["model-index"])
    return errors


def card_metadata(commit: Commit) -> Optional[dict]:
    import yaml

    blob = commit.files.get("README.md")
    block = _front_matter(blob.data.decode("utf-8", "replace")) if blob else None
    try:
        data = yaml.safe_load(block) if block else None
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class HubRequestHandler(BaseHTTPRequestHandler):
    server: "HubServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean; requests are in server.log
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise HubHTTPError(400, "request body is not valid JSON") from None

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict[str, str]] = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _auth(self) -> tuple[Optional[str], Optional[str]]:
        header = self.headers.get("Authorization", "")
        if not header:
            return None, None
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        with self.server.store.lock:
            found = self.server.store.tokens.get(token)
        if found is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return found

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        user, role = self._auth()
        store = self.server.store
        repo = store.repos.get((repo_type, repo_id))
        if repo is None or not store.can_read(user, repo):
            raise HubHTTPError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write and not store.can_write(user, role, repo_id.split("/")[0]):
            raise HubHTTPError(403, "You don't have the rights to write to this repository"
                               + (" (read-only token)" if role == "read" else ""))
        return repo

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.segments = [unquote(s) for s in parts.path.split("/")[1:]]
        self.body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
        status = 200
        try:
            with self.server.store.lock:
                self._route()
        except HubHTTPError as e:
            status = e.status
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json(e.body or {"error": e.message}, e.status, headers)
        except Exception as e:  # a bug here must surface as a server error, not a hang
            status = 500
            self._json({"error": f"{type(e).__name__}: {e}"}, 500)
        self.server.log.append((self.command, parts.path, status))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    # -- routing -------------------------------------------------------------------------------
    def _route(self) -> None:
        s, method = self.segments, self.command
        if s[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if s[:2] == ["api", "repos"] and len(s) == 3:
            if s[2] == "create" and method == "POST":
                return self._create_repo()
            if s[2] == "delete" and method == "DELETE":
                return self._delete_repo()
        if len(s) >= 4 and s[0] == "api" and s[1] in REPO_TYPES:
            return self._repo_api(REPO_TYPES[s[1]], f"{s[2]}/{s[3]}", s[4:])
        if s and s[0] == "lfs-upload" and method == "PUT":
            return self._lfs_put(s[1])
        repo_type = "model"
        if s and s[0] in REPO_TYPES and s[0] != "models":
            repo_type, s = REPO_TYPES[s[0]], s[1:]
        if len(s) >= 3 and s[1].endswith(".git") and s[2:5] == ["info", "lfs", "objects"]:
            return self._lfs_api(repo_type, f"{s[0]}/{s[1][:-4]}", s[5:])
        if len(s) >= 5 and s[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
        raise HubHTTPError(404, f"no such endpoint: {method} {self.path}")

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        method = self.command
        action = rest[0] if rest else ""
        if action in ("", "revision") and method == "GET":
            revision = rest[1] if action == "revision" and len(rest) > 1 else "main"
            return self._repo_info(self._repo(repo_type, repo_id), revision)
        if action == "tree" and method == "GET" and len(rest) >= 2:
            return self._tree(self._repo(repo_type, repo_id), rest[1], "/".join(rest[2:]))
        if action == "paths-info" and method == "POST" and len(rest) == 2:
            return self._paths_info(self._repo(repo_type, repo_id), rest[1])
        if action == "refs" and method == "GET":
            return self._refs(self._repo(repo_type, repo_id))
        if action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
            return self._branch(self._repo(repo_type, repo_id, write=True), rest[1])
        if action == "auth-check" and method == "GET":
            self._repo(repo_type, repo_id, write=rest[1:] == ["write"])
            return self._json({})
        if action == "preupload" and method == "POST" and len(rest) == 2:
            return self._preupload(self._repo(repo_type, repo_id, write=True), rest[1])
        if action == "commit" and method == "POST" and len(rest) == 2:
            return self._commit(self._repo(repo_type, repo_id, write=True), rest[1])
        raise HubHTTPError(404, f"no such endpoint: {method} {self.path}")

    # -- accounts and repositories -------------------------------------------------------------
    def _whoami(self) -> None:
        user, role = self._auth()
        if user is None:
            raise HubHTTPError(401, "You must be authenticated")
        orgs = [{"type": "org", "name": org, "roleInOrg": members[user]}
                for org, members in self.server.store.orgs.items() if user in members]
        self._json({"type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user,
                    "fullname": user, "orgs": orgs,
                    "auth": {"type": "access_token",
                             "accessToken": {"displayName": f"{user}-{role}", "role": role}}})

    def _create_repo(self) -> None:
        user, role = self._auth()
        payload = self._json_body() or {}
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        name = payload.get("name")
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repository")
        if not name or not re.fullmatch(r"[\w.\-]{1,96}", name) or "--" in name or ".." in name:
            raise HubHTTPError(400, f"invalid repository name {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.server.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if not self.server.store.can_write(user, role, namespace):
            raise HubHTTPError(403, f"You don't have the rights to create a repository under {namespace}")
        if (repo_type, repo_id) in self.server.store.repos:
            raise HubHTTPError(409, "You already created this repository", body={
                "error": "You already created this repository", "url": url})
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        self.server.store.create_repo(repo_type, repo_id, private)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        payload = self._json_body() or {}
        user, _ = self._auth()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        self._repo(repo_type, repo_id, write=True)
        del self.server.store.repos[(repo_type, repo_id)]
        self._json({})

    def _repo_info(self, repo: Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.oid)
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256,
                                      "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
            siblings.append(sibling)
        card = card_metadata(commit) or {}
        tags = [t for t in (card.get("tags") or []) if isinstance(t, str)]
        if isinstance(card.get("library_name"), str):
            tags.append(card["library_name"])
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        base = card.get("base_model")
        tags += [f"base_model:{b}" for b in ([base] if isinstance(base, str) else base or [])]
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                "createdAt": repo.created_at, "private": repo.private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": tags, "siblings": siblings,
                "usedStorage": sum(b.size for b in commit.files.values())}
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            for key in ("pipeline_tag", "library_name"):
                if isinstance(card.get(key), str):
                    info[key] = card[key]
            if "model-index" in card:
                info["model-index"] = card["model-index"]
        if card:
            info["cardData"] = card
        self._json(info)

    # -- reading files -------------------------------------------------------------------------
    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> dict[str, str]:
        """The newest commit that changed ``path`` (a file or a folder)."""
        def state(c: Commit):
            return sorted((p, b.oid) for p, b in c.files.items() if p == path or p.startswith(path + "/"))

        current = state(commit)
        while commit.parent is not None and state(repo.commits[commit.parent]) == current:
            commit = repo.commits[commit.parent]
        return {"id": commit.oid, "title": commit.title, "date": commit.date}

    def _entries(self, repo: Repo, commit: Commit, paths: list[str], expand: bool) -> list[dict]:
        entries = []
        for path in paths:
            blob = commit.files.get(path)
            if blob is not None:
                entry = blob.tree_entry(path)
            else:
                inside = sorted((p, b.oid) for p, b in commit.files.items() if p.startswith(path + "/"))
                entry = {"type": "directory", "path": path, "size": 0,
                         "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest()}
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, path)
            entries.append(entry)
        return entries

    def _tree(self, repo: Repo, revision: str, folder: str) -> None:
        commit = repo.resolve(revision)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        inside = [p for p in commit.files if p.startswith(prefix)]
        if prefix and not inside:
            raise HubHTTPError(404, f"{folder} does not exist on {revision}", "EntryNotFound",
                               {"X-Repo-Commit": commit.oid})
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        paths: set[str] = set()
        for p in inside:
            rel = p[len(prefix):].split("/")
            depth = len(rel) if recursive else 1
            paths.update(prefix + "/".join(rel[:n]) for n in range(1, min(depth, len(rel)) + 1))
        expand = self.query.get("expand", "").lower() in ("1", "true")
        self._json(self._entries(repo, commit, sorted(paths), expand))

    def _paths_info(self, repo: Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = self._json_body() or {}
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(self.body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() == "true"
        known = [p.strip("/") for p in paths if p.strip("/") in commit.files
                 or any(f.startswith(p.strip("/") + "/") for f in commit.files)]
        self._json(self._entries(repo, commit, known, expand))

    def _refs(self, repo: Repo) -> None:
        self._json({"branches": [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                                 for name, oid in sorted(repo.branches.items())],
                    "converts": [], "tags": [], "pullRequests": []})

    def _branch(self, repo: Repo, branch: str) -> None:
        if self.command == "DELETE":
            if branch == "main":
                raise HubHTTPError(403, "the main branch cannot be deleted")
            if repo.branches.pop(branch, None) is None:
                raise HubHTTPError(404, f"branch {branch} does not exist", "RevisionNotFound")
            return self._json({})
        if branch in repo.branches:
            raise HubHTTPError(409, f"branch {branch} already exists")
        if branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
            raise HubHTTPError(400, f"invalid branch name {branch!r}")
        start = (self._json_body() or {}).get("startingPoint") or "main"
        repo.branches[branch] = repo.resolve(start).oid
        self._json({})

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = repo.resolve(revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubHTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"ETag": f'"{blob.etag}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        data, status = blob.data, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            start = int(match.group(1)) if match.group(1) else max(blob.size - int(match.group(2)), 0)
            end = int(match.group(2)) if match.group(1) and match.group(2) else blob.size - 1
            if start >= blob.size:
                raise HubHTTPError(416, "requested range not satisfiable",
                                   headers={"Content-Range": f"bytes */{blob.size}"})
            end = min(end, blob.size - 1)
            data, status = blob.data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        self._send(status, data, headers, content_type="application/octet-stream")

    # -- writing files -------------------------------------------------------------------------
    def _preupload(self, repo: Repo, revision: str) -> None:
        if self.query.get("create_pr"):
            raise HubHTTPError(400, "pull requests are not supported by this test server")
        commit = repo.resolve(revision)
        patterns = _lfs_patterns(commit)
        answers = []
        for item in (self._json_body() or {}).get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = (size > LFS_SIZE_THRESHOLD or any(_matches(path, p) for p in patterns)
                   or _is_binary(sample))
            existing = commit.files.get(path)
            # the same oid the client computes locally: sha256 for LFS, git blob id otherwise
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        self._json({"files": answers, "commitOid": commit.oid})

    def _commit(self, repo: Repo, revision: str) -> None:
        if self.query.get("create_pr"):
            raise HubHTTPError(400, "pull requests are not supported by this test server")
        if revision not in repo.branches:
            raise HubHTTPError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != head.oid:
            raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        store = self.server.store
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubHTTPError(400, f"unsupported encoding for {path}")
                files[path] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = store.lfs_objects.get(value.get("oid"))
                if data is None or ("size" in value and len(data) != int(value["size"])):
                    raise HubHTTPError(422, f"Your push was rejected because an LFS pointer pointed to a "
                                            f"file that does not exist: {path}")
                files[path] = Blob(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise HubHTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubHTTPError(400, f"unknown commit operation {key!r}")
        commit = store.new_commit(repo, head.oid, files, header.get("summary") or "update",
                                  header.get("description") or "")
        repo.branches[revision] = commit.oid
        repo_url = f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"
        self._json({"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                    "hookOutput": "", "commitUrl": f"{repo_url}/commit/{commit.oid}"})

    def _lfs_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        repo = self._repo(repo_type, repo_id, write=True)
        store = self.server.store
        payload = self._json_body() or {}
        if rest == ["batch"] and self.command == "POST":
            if payload.get("operation") != "upload":
                raise HubHTTPError(400, "only the upload operation is supported")
            if "basic" not in payload.get("transfers", ["basic"]):
                raise HubHTTPError(400, "only the basic transfer is supported")
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in store.lfs_objects:
                    key = secrets.token_urlsafe(16)
                    store.pending_uploads[key] = (oid, size)
                    repo_url = f"{self.server.url}/{URL_PREFIX[repo_type]}{repo.repo_id}"
                    answer["actions"] = {
                        "upload": {"href": f"{self.server.url}/lfs-upload/{oid}?key={key}"},
                        "verify": {"href": f"{repo_url}.git/info/lfs/objects/verify"}}
                objects.append(answer)
            return self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                              content_type="application/vnd.git-lfs+json")
        if rest == ["verify"] and self.command == "POST":
            data = store.lfs_objects.get(payload.get("oid"))
            if data is None or len(data) != int(payload.get("size", -1)):
                raise HubHTTPError(404, f"LFS object {payload.get('oid')} was not uploaded")
            return self._json({"success": True})
        raise HubHTTPError(404, f"no such LFS endpoint: {self.command} {self.path}")

    def _lfs_put(self, oid: str) -> None:
        """The signed-URL upload: the key in the URL is the only credential, as with storage URLs."""
        store = self.server.store
        expected = store.pending_uploads.get(self.query.get("key", ""))
        if expected is None or expected[0] != oid:
            raise HubHTTPError(403, "invalid or expired upload URL")
        if hashlib.sha256(self.body).hexdigest() != oid or len(self.body) != expected[1]:
            raise HubHTTPError(400, "uploaded content does not match the announced sha256 and size")
        store.lfs_objects[oid] = self.body
        del store.pending_uploads[self.query["key"]]
        self._json({})

    def _validate_yaml(self) -> None:
        payload = self._json_body() or {}
        errors = validate_readme(str(payload.get("content", "")))
        if errors:
            raise HubHTTPError(400, "Invalid metadata", body={
                "errors": [{"message": e} for e in errors], "warnings": []})
        self._json({"errors": [], "warnings": []})


class HubServer(ThreadingHTTPServer):
    """The server plus its store; ``url`` is the endpoint to give ``HF_ENDPOINT``."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), HubRequestHandler)
        self.store = HubStore()
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.url = f"http://{host}:{self.server_address[1]}"
        self._thread: Optional[threading.Thread] = None
        self._connections: set[socket.socket] = set()  # open keep-alive connections, closed by stop()

    def process_request(self, request, client_address):
        self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self._connections.discard(request)
        super().shutdown_request(request)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections: clients see the Hub go away, as in an outage."""
        if self._thread is not None:
            self.shutdown()
            self._thread = None
        self.server_close()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- pytest fixture -------------------------------------------------------------------------------

@dataclass
class LocalHub:
    """What a test gets from the ``hub_server`` fixture."""

    server: HubServer
    url: str
    user: str
    org: str
    token: str  # write token of ``user`` (also exported as HF_TOKEN)
    read_token: str  # read-only token of ``user``

    @property
    def store(self) -> HubStore:
        return self.server.store

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.store.files(repo_id, revision)


def point_client_at(monkeypatch, url: str, token: Optional[str], cache_dir: str) -> None:
    """Point huggingface_hub (and libraries built on it) at ``url``.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and the cache paths once,
    at import, into ``huggingface_hub.constants``; some values are copied further (the module-level
    ``HfApi`` instance, the set of trusted Hub origins, transformers' shared ``HfApi``). The
    environment variables are set too, for subprocesses (the ``sft-hub`` CLI run in a test).
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http

    for name, value in {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                        "HF_HUB_CACHE": cache_dir, "HF_TOKEN_PATH": f"{cache_dir}/token",
                        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    host = urlsplit(url).hostname
    for name, value in {"ENDPOINT": url,
                        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {host},
                        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True,
                        "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
                        "HF_HUB_CACHE": cache_dir, "HF_TOKEN_PATH": f"{cache_dir}/token",
                        "HF_STORED_TOKENS_PATH": f"{cache_dir}/stored_tokens"}.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE",
                        constants.HUGGINGFACE_CO_URL_TEMPLATE, raising=False)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(url)})
    _forget_transformers_hf_api()


def _forget_transformers_hf_api() -> None:
    """transformers keeps one lazily built HfApi; drop it so the next one uses the current endpoint."""
    module = sys.modules.get("transformers.utils.hub")
    if module is not None and hasattr(module, "_hf_api"):
        module._hf_api = None


def _make_local_hub(monkeypatch, tmp_path_factory):
    server = HubServer().start()
    store = server.store
    user, org = "sft-tester", "sft-org"
    token = store.add_token(user, "write")
    read_token = store.add_token(user, "read")
    store.add_org(org, {user: "write"})
    point_client_at(monkeypatch, server.url, token, str(tmp_path_factory.mktemp("hf_cache")))
    return LocalHub(server, server.url, user, org, token, read_token)


@pytest.fixture
def hub_server(monkeypatch, tmp_path_factory):
    """A fresh local Hub on 127.0.0.1:<free port>; the real client points at it for this test.

    Sets HF_ENDPOINT, HF_HUB_DISABLE_XET=1, HF_TOKEN (write token of ``hub.user``, who also writes
    to organisation ``hub.org``), HF_HUB_OFFLINE=0 and a private HF cache.
    """
    hub = _make_local_hub(monkeypatch, tmp_path_factory)
    try:
        yield hub
    finally:
        hub.server.stop()
        _forget_transformers_hf_api()


if __name__ == "__main__":
    srv = HubServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"HF_ENDPOINT={srv.url} HF_HUB_DISABLE_XET=1 HF_TOKEN={srv.store.add_token('local', 'write')}",
          flush=True)
    srv.serve_forever()
