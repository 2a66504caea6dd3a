"""A local stand-in for the Hugging Face Hub's HTTP API: a real `http.server` on 127.0.0.1, in a thread.

Model repositories (`hub.repos`) and dataset repositories (`hub.datasets`, `repo_type="dataset"`) are served alike:
below, `{kind}` is `models` or `datasets`, and a file URL is `/{repo}/resolve/...` for a model, `/datasets/{repo}/...`
for a dataset, as on the Hub.

Uploads: it answers the endpoints huggingface_hub's `create_repo` / `create_commit` call (see hf-stack-notes §5):

- `POST /api/repos/create`: records the repository (its `type`: model by default, or dataset) and its visibility;
  409 when it exists (as the Hub does);
- `POST /api/validate-yaml`: parses the README's YAML header, 400 with the parser's message when it does not parse;
- `POST /api/{kind}/{repo}/preupload/{revision}`: every file goes the "regular" way (inline in the commit);
- `POST /api/{kind}/{repo}/commit/{revision}`: decodes the NDJSON commit and stores each file's bytes as a new
  commit (whose id depends on its parent and its content).

POSTs without `Authorization: Bearer <token>` get 401 (but paths-info, which only reads).

Downloads: the endpoints `snapshot_download` / `hf_hub_download` and, for datasets, `datasets.load_dataset("org/name")`
(through `HfFileSystem`: info, tree listings, then each data file) call, for the repositories pushed to it:

- `GET /api/{kind}/{repo}[/revision/{revision}]` (`repo_info`): `id`, `sha` (the commit `revision` names), `private`,
  `siblings` (`rfilename`, plus `size` and `blobId` with `?blobs=true`);
- `GET /api/{kind}/{repo}/tree/{revision}[/{path}]` (`list_repo_tree`): one page (no `Link` header) of
  `{"type": "file" | "directory", "path", "size", "oid"}` entries, all below `path` with `?recursive=true`, else its
  direct children;
- `POST /api/{kind}/{repo}/paths-info/{revision}` (`get_paths_info`, form fields `paths`): the entries of those of
  `paths` that exist, as the tree gives them; a read, so no token is needed for a public repository;
- `HEAD` / `GET /[datasets/]{repo}/resolve/{revision}/{file}` (`get_hf_file_metadata`, `http_get`): the bytes, with
  `X-Repo-Commit`, `ETag` (the file's git blob id, quoted) and `Content-Length`. Every file is "regular": no LFS,
  no Xet headers, no redirect; `Range` is ignored (a 200 with the whole file, which huggingface_hub handles).

A revision is `main` (the last commit) or a commit id. Errors carry the Hub's `X-Error-Code`, which huggingface_hub's
`hf_raise_for_status` maps to its exceptions: `RepoNotFound` (404, or 401 without a token, as the Hub answers) for an
unknown repository and for a private one read without an accepted token; `RevisionNotFound` (404) for another
revision, and for a repository never committed to (the real Hub would show its initial `.gitattributes` commit);
`EntryNotFound` (404, with `X-Repo-Commit`) for a missing file.

Tokens: with `FakeHub(token=...)` only that token is accepted; by default any bearer token is. Anything else (e.g.
`GET /api/agent-harnesses`): 404. Every request is recorded for the tests to inspect.
"""

import base64
import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# The repository types the fake serves, as `create_repo`'s `type` names them -> their API path segment.
KINDS = {"model": "models", "dataset": "datasets"}


@dataclass
class FakeRepo:
    """A repository on the fake Hub: its visibility, its files as last committed, its commit ids (oldest first) and
    the files at each commit."""

    visibility: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)


def git_blob_id(content: bytes) -> str:
    """The git object id of a file's content, which the Hub gives as a regular file's `oid` and `ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _tree_id(files: dict[str, bytes]) -> str:
    """A stand-in for a directory's git tree id: it changes when any file below it does."""
    return hashlib.sha1("".join(name + git_blob_id(files[name]) for name in sorted(files)).encode()).hexdigest()


class HubError(Exception):
    """An error reply as the Hub sends it: a status, its `X-Error-Code` / `X-Error-Message`, and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class RecordedRequest:
    """One HTTP request as the fake Hub received it (body decompressed)."""

    method: str
    path: str
    authorization: str | None
    body: bytes


class FakeHub:
    """`with FakeHub() as hub:` serves on `hub.url`; `hub.repos` holds the model repositories uploaded, `hub.datasets`
    the dataset repositories, `hub.requests` every call."""

    def __init__(self, user: str = "tester", token: str | None = None):
        self.user = user
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.datasets: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def calls(self, path_part: str) -> list[RecordedRequest]:
        """The recorded requests whose path contains `path_part`."""
        return [request for request in self.requests if path_part in request.path]

    def repositories(self, kind: str) -> dict[str, FakeRepo]:
        """The repositories of one kind: `models` (`hub.repos`) or `datasets` (`hub.datasets`)."""
        return self.datasets if kind == "datasets" else self.repos

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries a token the fake Hub accepts."""
        if not (authorization or "").startswith("Bearer "):
            return False
        return self.token is None or authorization == f"Bearer {self.token}"

    # ---- endpoint logic: (status, JSON body) from the request ----

    def create_repo(self, body: dict) -> tuple[int, dict]:
        repo_type = body.get("type") or "model"
        if repo_type not in KINDS:
            return 400, {"error": f"the fake Hub serves model and dataset repositories, not {repo_type!r}"}
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        repos = self.repositories(KINDS[repo_type])
        with self._lock:
            if repo_id in repos:
                return 409, {"error": f"You already created this {repo_type} repo", "url": url}
            repos[repo_id] = FakeRepo(visibility=body.get("visibility", "public"))
        return 200, {"url": url, "name": repo_id}

    @staticmethod
    def validate_yaml(body: dict) -> tuple[int, dict]:
        content = body.get("content", "")
        if not content.startswith("---\n"):
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            metadata = yaml.safe_load(content.split("---\n", 2)[1])
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": str(error)}]}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}]}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, kind: str, repo_id: str, body: dict) -> tuple[int, dict]:
        if repo_id not in self.repositories(kind):
            return 404, {"error": f"Repository not found: {repo_id}"}
        files = [
            {"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for entry in body.get("files", [])
        ]
        return 200, {"files": files, "commitOid": None}

    def commit(self, kind: str, repo_id: str, payload: bytes) -> tuple[int, dict]:
        repos = self.repositories(kind)
        if repo_id not in repos:
            return 404, {"error": f"Repository not found: {repo_id}"}
        received = {}
        for line in payload.decode("utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                if value.get("encoding") != "base64":
                    return 400, {"error": f"unsupported encoding {value.get('encoding')!r}"}
                received[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("lfsFile", "deletedFile", "deletedFolder", "copyFile"):
                # The fake only answers "regular" to preupload, so a client sending these is misbehaving.
                return 400, {"error": f"the fake Hub does not handle {item['key']}"}
        with self._lock:
            repo = repos[repo_id]
            parent = repo.commits[-1] if repo.commits else ""
            oid = hashlib.sha1(parent.encode() + payload).hexdigest()
            repo.files.update(received)
            repo.commits.append(oid)
            repo.snapshots[oid] = dict(repo.files)
        prefix = "datasets/" if kind == "datasets" else ""
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}"}

    # ---- downloads: raise HubError for what the Hub answers with an error ----

    def readable_repo(self, kind: str, repo_id: str, authorization: str | None) -> FakeRepo:
        """The repository, if it exists and the caller may read it (a private one needs an accepted token)."""
        repo = self.repositories(kind).get(repo_id)
        if repo is None or (repo.visibility == "private" and not self.accepts(authorization)):
            # The Hub does not tell a private repository from a missing one; anonymous callers get 401.
            status = 404 if self.accepts(authorization) else 401
            raise HubError(status, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def snapshot(repo: FakeRepo, revision: str) -> tuple[str, dict[str, bytes]]:
        """The commit id `revision` names (`main` or a commit id) and the files at that commit."""
        commit = repo.commits[-1] if revision == "main" and repo.commits else revision
        if commit not in repo.snapshots:
            raise HubError(404, "RevisionNotFound", "Invalid rev id: " + revision)
        return commit, repo.snapshots[commit]

    def repo_info(self, kind: str, repo_id: str, revision: str, authorization: str | None, blobs: bool) -> dict:
        repo = self.readable_repo(kind, repo_id, authorization)
        commit, files = self.snapshot(repo, revision)
        siblings = [
            {"rfilename": path, **({"size": len(content), "blobId": git_blob_id(content)} if blobs else {})}
            for path, content in sorted(files.items())
        ]
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit,
            "private": repo.visibility == "private",
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }

    def tree(
        self, kind: str, repo_id: str, revision: str, path: str, recursive: bool, authorization: str | None
    ) -> list[dict]:
        repo = self.readable_repo(kind, repo_id, authorization)
        _, files = self.snapshot(repo, revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        below = {name[len(prefix) :]: content for name, content in files.items() if name.startswith(prefix)}
        if prefix and not below:
            raise HubError(404, "EntryNotFound", f'{path} does not exist on "{revision}"')
        directories: dict[str, list[str]] = {}  # directory (relative to prefix) -> the files below it
        for name in below:
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directories.setdefault("/".join(parts[:depth]), []).append(name)
        entries = [
            {"type": "directory", "oid": _tree_id({name: below[name] for name in names}), "size": 0, "path": prefix + d}
            for d, names in sorted(directories.items())
        ]
        entries += [
            {"type": "file", "oid": git_blob_id(content), "size": len(content), "path": prefix + name}
            for name, content in sorted(below.items())
        ]
        if not recursive:
            entries = [entry for entry in entries if "/" not in entry["path"][len(prefix) :]]
        return entries

    def paths_info(
        self, kind: str, repo_id: str, revision: str, paths: list[str], authorization: str | None
    ) -> list[dict]:
        """The tree entries of those of `paths` that exist (the Hub leaves the others out)."""
        entries = {entry["path"]: entry for entry in self.tree(kind, repo_id, revision, "", True, authorization)}
        return [entries[path.strip("/")] for path in paths if path.strip("/") in entries]

    def resolve(
        self, kind: str, repo_id: str, revision: str, filename: str, authorization: str | None
    ) -> tuple[bytes, dict]:
        """The file's bytes and the headers the Hub sends with them."""
        repo = self.readable_repo(kind, repo_id, authorization)
        commit, files = self.snapshot(repo, revision)
        if filename not in files:
            raise HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        content = files[filename]
        return content, {
            "X-Repo-Commit": commit,
            "ETag": f'"{git_blob_id(content)}"',
            "Content-Type": "application/octet-stream",
        }


class _Server(ThreadingHTTPServer):
    # snapshot_download fetches up to 8 files at once; the default backlog of 5 could make a connection wait.
    request_queue_size = 64


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._record(b"")
            try:
                self._download()
            except HubError as error:
                self._reply_error(error)

        do_HEAD = do_GET

        def _download(self) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            # Split before unquoting: a revision such as refs/pr/1 comes quoted as one segment.
            parts = [unquote(part) for part in url.path.strip("/").split("/")]
            authorization = self.headers.get("Authorization")
            api = parts[0] == "api" and len(parts) >= 4 and parts[1] in KINDS.values()
            kind = parts[1] if api else "datasets" if parts[0] == "datasets" else "models"
            file_url = parts[1:] if kind == "datasets" and not api else parts  # {org}/{name}/resolve/{rev}/{file}
            if api and (len(parts) == 4 or (len(parts) == 6 and parts[4] == "revision")):
                revision = parts[5] if len(parts) == 6 else "main"
                blobs = query.get("blobs", "").lower() in ("1", "true")
                self._reply(200, hub.repo_info(kind, f"{parts[2]}/{parts[3]}", revision, authorization, blobs))
            elif api and len(parts) >= 6 and parts[4] == "tree":
                recursive = query.get("recursive", "").lower() in ("1", "true")
                repo_id, path = f"{parts[2]}/{parts[3]}", "/".join(parts[6:])
                self._reply(200, hub.tree(kind, repo_id, parts[5], path, recursive, authorization))
            elif len(file_url) >= 5 and file_url[2] == "resolve" and parts[0] != "api":
                repo_id, revision, filename = f"{file_url[0]}/{file_url[1]}", file_url[3], "/".join(file_url[4:])
                content, headers = hub.resolve(kind, repo_id, revision, filename, authorization)
                self._send(200, content, headers)
            else:
                self._reply(404, {"error": f"{url.path} is not served by the fake Hub"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            self._record(body)
            path = self.path.split("?")[0]
            parts = path.strip("/").split("/")
            if len(parts) == 6 and parts[0] == "api" and parts[1] in KINDS.values() and parts[4] == "paths-info":
                # A read (form fields `paths`), answered as the GETs are: no token needed for a public repository.
                paths = parse_qs(body.decode()).get("paths", [])
                repo_id, revision = f"{parts[2]}/{parts[3]}", unquote(parts[5])
                authorization = self.headers.get("Authorization")
                try:
                    self._reply(200, hub.paths_info(parts[1], repo_id, revision, paths, authorization))
                except HubError as error:
                    self._reply_error(error)
                return
            if not hub.accepts(self.headers.get("Authorization")):
                message = "Invalid credentials in Authorization header"
                self._reply(401, {"error": message}, {"X-Error-Message": message})
                return
            if path == "/api/repos/create":
                self._reply(*hub.create_repo(json.loads(body)))
            elif path == "/api/validate-yaml":
                self._reply(*hub.validate_yaml(json.loads(body)))
            elif len(parts) == 6 and parts[0] == "api" and parts[1] in KINDS.values() and parts[4] == "preupload":
                self._reply(*hub.preupload(parts[1], f"{parts[2]}/{parts[3]}", json.loads(body)))
            elif len(parts) == 6 and parts[0] == "api" and parts[1] in KINDS.values() and parts[4] == "commit":
                self._reply(*hub.commit(parts[1], f"{parts[2]}/{parts[3]}", body))
            else:
                self._reply(404, {"error": f"{path} is not served by the fake Hub"})

        def _record(self, body: bytes) -> None:
            with hub._lock:
                hub.requests.append(RecordedRequest(self.command, self.path, self.headers.get("Authorization"), body))

        def _reply_error(self, error: HubError) -> None:
            headers = {"X-Error-Code": error.code, "X-Error-Message": error.message, **error.headers}
            self._reply(error.status, {"error": error.message}, headers)

        def _reply(self, status: int, payload: dict | list, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            """Reply `data` with `headers` and its Content-Length; a HEAD reply has the same headers and no body."""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
