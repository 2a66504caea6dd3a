"""A local stand-in for the Hugging Face Hub's HTTP API: a real `http.server` on 127.0.0.1, in a thread.

It answers the endpoints huggingface_hub's `create_repo` / `create_commit` call (see hf-stack-notes §5):

- `POST /api/repos/create`: records the repository and its visibility; 409 when it exists (as the Hub does);
- `POST /api/validate-yaml`: parses the README's YAML header, 400 with the parser's message when it does not parse;
- `POST /api/models/{repo}/preupload/{revision}`: every file goes the "regular" way (inline in the commit);
- `POST /api/models/{repo}/commit/{revision}`: decodes the NDJSON commit and stores each file's bytes;
- anything else (e.g. `GET /api/agent-harnesses`): 404.

Requests without `Authorization: Bearer <token>` get 401. Every request is recorded for the tests to inspect.
"""

import base64
import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


@dataclass
class FakeRepo:
    """A repository on the fake Hub: its visibility, its files as last committed, its commit ids."""

    visibility: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


@dataclass
class RecordedRequest:
    """One HTTP request as the fake Hub received it (body decompressed)."""

    method: str
    path: str
    authorization: str | None
    body: bytes


class FakeHub:
    """`with FakeHub() as hub:` serves on `hub.url`; `hub.repos` holds what was uploaded, `hub.requests` every call."""

    def __init__(self, user: str = "tester"):
        self.user = user
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
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

    # ---- endpoint logic: (status, JSON body) from the request ----

    def create_repo(self, body: dict) -> tuple[int, dict]:
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.url}/{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}
            self.repos[repo_id] = FakeRepo(visibility=body.get("visibility", "public"))
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

    def preupload(self, repo_id: str, body: dict) -> tuple[int, dict]:
        if repo_id not in self.repos:
            return 404, {"error": f"Repository not found: {repo_id}"}
        files = [
            {"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for entry in body.get("files", [])
        ]
        return 200, {"files": files, "commitOid": None}

    def commit(self, repo_id: str, payload: bytes) -> tuple[int, dict]:
        if repo_id not in self.repos:
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
        oid = hashlib.sha1(payload).hexdigest()
        with self._lock:
            repo = self.repos[repo_id]
            repo.files.update(received)
            repo.commits.append(oid)
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}"}


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._record(b"")
            self._reply(404, {"error": f"{self.path} is not served by the fake Hub"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            self._record(body)
            if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return
            path = self.path.split("?")[0]
            parts = path.strip("/").split("/")
            if path == "/api/repos/create":
                self._reply(*hub.create_repo(json.loads(body)))
            elif path == "/api/validate-yaml":
                self._reply(*hub.validate_yaml(json.loads(body)))
            elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                self._reply(*hub.preupload(f"{parts[2]}/{parts[3]}", json.loads(body)))
            elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                self._reply(*hub.commit(f"{parts[2]}/{parts[3]}", body))
            else:
                self._reply(404, {"error": f"{path} is not served by the fake Hub"})

        def _record(self, body: bytes) -> None:
            with hub._lock:
                hub.requests.append(RecordedRequest(self.command, self.path, self.headers.get("Authorization"), body))

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
