"""A Kubernetes API test server: core/v1 pods over real HTTP on loopback, strict like an API
server, each pod's container run as a real local process.

    with KubeApiServer() as kube:
        provider = KubernetesProvider(KubernetesConfig(image="uplodr:test", ...),
                                      KubeApi(kube.config(), kube.namespace))

What it implements:
- pods in its namespaces: create (with `dryRun=All`), get, list (with `labelSelector` of
  `k=v`, `k!=v`, `k`, `!k`, and `fieldSelector` on metadata.name / status.phase), watch (a
  stream of ADDED/MODIFIED/DELETED after a `resourceVersion`, or the current state first
  without one; `timeoutSeconds`), delete (with `gracePeriodSeconds`: SIGTERM, SIGKILL after
  the grace period, the object removed once its process is gone); SelfSubjectAccessReview;
- every request body checked against Kubernetes' own schema for its kind (strict: an unknown
  field is an error, tests/support/k8s_schema.py) → 400; every answer checked too
  (`spec_errors` collects what the schema does not allow); unknown query parameters → 400;
- what the API server itself checks: bearer token (401), the Role's verbs (403 for the rest,
  `verbs`), the namespace (404), the name (DNS-1123, 409 when taken), metadata.namespace
  matching the path, the Pod Security "restricted" profile (403 naming what violates it),
  a pod-count ResourceQuota (`quota_pods`, 403 "exceeded quota");
- what a kubelet reports: Pending (PodScheduled, or Unschedulable when `unschedulable`) →
  podIP 127.0.0.N and ContainerCreating → Running → Succeeded/Failed with
  `containerStatuses[].state.terminated` (exitCode, 128+signal, reason Error/Completed, or
  OOMKilled through `kill_process(oom=True)`); an image not in `images` waits with
  ErrImagePull, then ImagePullBackOff; `activeDeadlineSeconds` ends a pod (Failed,
  DeadlineExceeded); a pod whose ownerReferences name a pod that no longer exists is deleted
  (the garbage collector);
- `stop_api()` / `start_api()`: the HTTP front goes away and comes back on the same port while
  the pods (the kubelet) keep running, as in an API server outage.

- process mode (default): each pod's container is a local process (`process_factory`, as the
  Fly simulator's) listening on its pod IP 127.0.0.N; container mode (`containers=
  KubeDockerPods(...)`, tests/support/k8s_docker.py): a container of the pod's image on the
  private engine with its limits, securityContext and emptyDir, on a pod network.

What it leaves out of a real cluster: nodes and real scheduling (`unschedulable` is a switch),
image pulls (`images` is a set, or the engine's images), the securityContext, resource limits
and the emptyDir are enforced only in container mode, no Services or NetworkPolicies, no
resourceVersion expiry (410), no bookmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .asgi_thread import serve_in_thread
from .fly_api import ProcessFactory, WorkerLaunch, standin_process
from .k8s_docker import KubeDockerPods, PodContainer
from .k8s_schema import problems

VERBS = frozenset({"create", "get", "list", "watch", "delete"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUERY = {
    "create": {"dryRun", "fieldManager", "fieldValidation", "pretty"},
    "get": {"pretty"},
    "list": {
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "timeoutSeconds",
        "watch",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "pretty",
    },
    "delete": {"gracePeriodSeconds", "propagationPolicy", "dryRun", "orphanDependents", "pretty"},
}
_TICK = 0.02  # seconds between the kubelet's looks at its pods, and a watch's at the events


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> JSONResponse:
    """The API server's `Status` answer for an error."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


class Refused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.response = _status(code, reason, message)


@dataclass
class FakePod:
    obj: dict[str, Any]  # as the API answers it
    created: float  # monotonic
    process: subprocess.Popen[bytes] | PodContainer | None = None
    started: float | None = None  # monotonic, when it got its IP (status.startTime)
    ip_index: int = 0
    oom: bool = False  # the next exit of its process is an OOM kill
    kill_at: float | None = None  # monotonic: SIGKILL then (the grace period ended)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.obj["status"]
        return status

    @property
    def terminal(self) -> bool:
        return self.status.get("phase") in ("Succeeded", "Failed")


@dataclass
class Event:
    version: int
    kind: str  # ADDED, MODIFIED, DELETED
    namespace: str
    obj: dict[str, Any]


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """What breaks the Pod Security Standards' "restricted" profile (kubernetes.io/docs/concepts/
    security/pod-security-standards), the checks a worker pod can meet or miss."""
    pod_context = spec.get("securityContext") or {}
    found = []
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        found.append("host namespaces")
    if any("hostPath" in volume for volume in spec.get("volumes") or []):
        found.append("hostPath volumes")
    for container in spec.get("containers") or []:
        context = container.get("securityContext") or {}
        name = container.get("name")
        if context.get("privileged"):
            found.append(f'privileged (container "{name}")')
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f'allowPrivilegeEscalation != false (container "{name}")')
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            found.append(f'unrestricted capabilities (container "{name}" must drop ALL)')
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            found.append(f'runAsNonRoot != true (container "{name}")')
        profile = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
        if profile.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f'seccompProfile (container "{name}" must set RuntimeDefault)')
        if 0 in (context.get("runAsUser"), pod_context.get("runAsUser")):
            found.append(f'runAsUser=0 (container "{name}")')
    return found


def _selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """An equality-based label selector (k=v, k==v, k!=v, k, !k); set-based ones → 400."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for term in filter(None, (t.strip() for t in text.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise Refused(400, "BadRequest", f"unsupported label selector term {term!r}")
        if "!=" in term:
            key, _, value = term.partition("!=")
            terms.append(("!=", key, value))
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            terms.append(("=", key, value))
        elif term.startswith("!"):
            terms.append(("!", term[1:], ""))
        else:
            terms.append(("exists", term, ""))

    def match(labels: Mapping[str, str]) -> bool:
        for operator, key, value in terms:
            ok = {
                "!=": labels.get(key) != value,
                "=": labels.get(key) == value,
                "!": key not in labels,
                "exists": key in labels,
            }[operator]
            if not ok:
                return False
        return True

    return match


def _fields(text: str) -> Callable[[Mapping[str, Any]], bool]:
    wanted: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = term.replace("==", "=").partition("=")
        if key not in ("metadata.name", "metadata.namespace", "status.phase"):
            raise Refused(400, "BadRequest", f'field label not supported: "{key}"')
        wanted[key] = value

    def match(obj: Mapping[str, Any]) -> bool:
        for key, value in wanted.items():
            section, _, name = key.partition(".")
            if str((obj.get(section) or {}).get(name)) != value:
                return False
        return True

    return match


class KubeApiServer:
    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("uplodr",),
        token: str = "k8s-test-token",
        verbs: Iterable[str] = VERBS,
        images: Iterable[str] | None = None,  # None: every image "pulls"
        process_factory: ProcessFactory = standin_process,
        schedule_latency: float = 0.02,
        start_latency: float = 0.02,
        pull_backoff: float = 0.3,  # ErrImagePull → ImagePullBackOff after this long
        quota_pods: int | None = None,
        account: str = "system:serviceaccount:uplodr:uplodr-gateway",
        containers: KubeDockerPods | None = None,  # container mode: pods as containers
    ) -> None:
        self.containers = containers
        self.namespaces = set(namespaces)
        self.namespace = next(iter(namespaces))
        self.token = token
        self.verbs = set(verbs)
        self.images = None if images is None else set(images)
        self.process_factory = process_factory
        self.schedule_latency = schedule_latency
        self.start_latency = start_latency
        self.pull_backoff = pull_backoff
        self.quota_pods = quota_pods
        self.unschedulable = False  # new pods are never scheduled (no node has room)
        self.account = account
        self.calls: Counter[str] = Counter()  # per verb, every request that was routed
        self.statuses: Counter[tuple[str, int]] = Counter()  # (verb, HTTP status)
        self.spec_errors: list[str] = []  # answers of ours that the schema does not allow
        self.created = 0  # pods made (dry runs not counted)
        # pods deleted, by who: user (the API), kubectl (delete_pod), gc, shutdown
        self.deleted: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._pods: dict[tuple[str, str], FakePod] = {}
        self._events: list[Event] = []
        self._version = 1
        self._next_ip = 2
        self._stopping = threading.Event()
        self._kubelet: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.url = ""
        self.asgi = Starlette(
            routes=[
                Route("/api/v1/namespaces/{ns}/pods", self._list, methods=["GET"]),
                Route("/api/v1/namespaces/{ns}/pods", self._create, methods=["POST"]),
                Route("/api/v1/namespaces/{ns}/pods/{name}", self._get, methods=["GET"]),
                Route("/api/v1/namespaces/{ns}/pods/{name}", self._delete, methods=["DELETE"]),
                Route(
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    self._review,
                    methods=["POST"],
                ),
            ]
        )

    # -- running -----------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        self._kubelet = threading.Thread(target=self._kubelet_loop, name="k8s-kubelet", daemon=True)
        self._kubelet.start()
        self.start_api()
        return self

    def start_api(self) -> None:
        """Serve the API (again: on the same port as before, once it had one)."""
        self._server, self._thread, self.port = serve_in_thread(
            self.asgi, "k8s-api", port=self.port
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def stop_api(self) -> None:
        """The HTTP front goes away (connections refused); pods keep running."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def shutdown(self) -> None:
        """Kill every pod's process, stop the kubelet and the server."""
        self.stop_api()
        self._stopping.set()
        if self._kubelet is not None:
            self._kubelet.join(timeout=10)
        with self._lock:
            for key, pod in list(self._pods.items()):
                _kill(pod.process)
                del self._pods[key]
                if "deletionTimestamp" not in pod.obj["metadata"]:
                    self.deleted["shutdown"] += 1

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def config(self) -> Any:
        """A lightkube KubeConfig for this server, as a kubeconfig file would give."""
        from lightkube import KubeConfig
        from lightkube.config.models import Cluster, User

        return KubeConfig.from_one(
            cluster=Cluster(server=self.url), user=User(token=self.token), namespace=self.namespace
        )

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file for this server (KUBECONFIG=path)."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "uplodr", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "uplodr", "namespace": self.namespace},
                }
            ],
            "current-context": "test",
        }
        path.write_text(json.dumps(document))  # JSON is YAML
        return path

    # -- what tests look at and do -------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        """The pods that exist now (terminating ones included), as the API answers them."""
        with self._lock:
            return [json.loads(json.dumps(p.obj)) for p in self._pods.values()]

    @property
    def processes_alive(self) -> int:
        with self._lock:
            return sum(
                1 for p in self._pods.values() if p.process is not None and p.process.poll() is None
            )

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        """The local process of pod `name` (process mode), while the pod exists."""
        with self._lock:
            pod = next((p for p in self._pods.values() if p.name == name), None)
            process = pod.process if pod is not None else None
        return process if isinstance(process, subprocess.Popen) else None

    def kill_process(self, name: str, *, oom: bool = False) -> bool:
        """SIGKILL the pod's process, as a crash (or, `oom`, the kernel's OOM killer) would."""
        with self._lock:
            pod = next((p for p in self._pods.values() if p.name == name), None)
            process = pod.process if pod is not None else None
            if pod is None or process is None or process.poll() is not None:
                return False
            pod.oom = oom
        if isinstance(process, PodContainer):
            return process.crash()
        _kill(process, wait=False)
        return True

    def add_pod(self, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store a pod as someone else's client would create it (no checks but the schema)."""
        with self._lock:
            pod = self._store(namespace, dict(obj))
            copy: dict[str, Any] = json.loads(json.dumps(pod.obj))
            return copy

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod as someone else's client would (grace period 0)."""
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is not None and self._mark_deleted(namespace, pod, 0):
                self.deleted["kubectl"] += 1

    # -- request pipeline --------------------------------------------------------------------

    def _admit(self, request: Request, verb: str, namespace: str | None, resource: str) -> None:
        self.calls[verb] += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise Refused(401, "Unauthorized", "Unauthorized")
        known = (
            _QUERY["list" if verb == "watch" else verb] if resource else set(request.query_params)
        )
        unknown = set(request.query_params) - known
        if unknown:
            raise Refused(400, "BadRequest", f"unknown query parameters: {sorted(unknown)}")
        if resource == "pods" and verb not in self.verbs:
            raise Refused(
                403,
                "Forbidden",
                f'pods is forbidden: User "{self.account}" cannot {verb} resource "pods" in '
                f'API group "" in the namespace "{namespace}"',
            )
        if namespace is not None and namespace not in self.namespaces:
            raise Refused(404, "NotFound", f'namespaces "{namespace}" not found')

    async def _body(self, request: Request, kind: str, api_version: str) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise Refused(400, "BadRequest", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "BadRequest", "the body is not an object")
        if body.get("kind") != kind or body.get("apiVersion") != api_version:
            raise Refused(400, "BadRequest", f"the body must be a {api_version} {kind}")
        if found := problems(body):
            raise Refused(400, "BadRequest", f"strict decoding error: {'; '.join(found)}")
        return body

    def _answer(self, verb: str, response: Response) -> Response:
        self.statuses[(verb, response.status_code)] += 1
        return response

    def _checked(self, obj: dict[str, Any]) -> dict[str, Any]:
        document = {"kind": "Pod", "apiVersion": "v1", **obj}
        for problem in problems(document):
            self.spec_errors.append(f"Pod answer: {problem}")
        return document

    # -- endpoints ---------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        namespace = request.path_params["ns"]
        try:
            self._admit(request, "create", namespace, "pods")
            body = await self._body(request, "Pod", "v1")
            meta = body.get("metadata") or {}
            name = str(meta.get("name") or "")
            if not _DNS_SUBDOMAIN.match(name):
                raise Refused(422, "Invalid", f'Pod "{name}" is invalid: metadata.name: Invalid')
            if meta.get("namespace") not in (None, namespace):
                raise Refused(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            if violations := restricted_violations(body.get("spec") or {}):
                raise Refused(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": '
                    + ", ".join(violations),
                )
            dry_run = request.query_params.get("dryRun") == "All"
            with self._lock:
                if (namespace, name) in self._pods:
                    raise Refused(409, "AlreadyExists", f'pods "{name}" already exists')
                used = sum(1 for p in self._pods.values() if not p.terminal)
                if self.quota_pods is not None and used >= self.quota_pods:
                    raise Refused(
                        403,
                        "Forbidden",
                        f'pods "{name}" is forbidden: exceeded quota: pods, requested: pods=1, '
                        f"used: pods={used}, limited: pods={self.quota_pods}",
                    )
                if dry_run:
                    answer = self._checked({**body, "status": {"phase": "Pending"}})
                else:
                    answer = self._checked(self._store(namespace, body).obj)
        except Refused as refused:
            return self._answer("create", refused.response)
        return self._answer("create", JSONResponse(answer, status_code=201))

    async def _get(self, request: Request) -> Response:
        namespace, name = request.path_params["ns"], request.path_params["name"]
        try:
            self._admit(request, "get", namespace, "pods")
            with self._lock:
                pod = self._pods.get((namespace, name))
                if pod is None:
                    raise Refused(404, "NotFound", f'pods "{name}" not found')
                answer = self._checked(pod.obj)
        except Refused as refused:
            return self._answer("get", refused.response)
        return self._answer("get", JSONResponse(answer))

    async def _list(self, request: Request) -> Response:
        namespace = request.path_params["ns"]
        watch = request.query_params.get("watch") in ("true", "1")
        verb = "watch" if watch else "list"
        try:
            self._admit(request, verb, namespace, "pods")
            labels = _selector(request.query_params.get("labelSelector", ""))
            fields = _fields(request.query_params.get("fieldSelector", ""))
        except Refused as refused:
            return self._answer(verb, refused.response)

        def match(obj: Mapping[str, Any]) -> bool:
            return labels(obj["metadata"].get("labels") or {}) and fields(obj)

        if watch:
            since = request.query_params.get("resourceVersion")
            timeout = float(request.query_params.get("timeoutSeconds") or 1800)
            stream = self._watch(namespace, match, int(since) if since else None, timeout)
            return self._answer(verb, StreamingResponse(stream, media_type="application/json"))
        with self._lock:
            items = [
                self._checked(p.obj)
                for (ns, _), p in self._pods.items()
                if ns == namespace and match(p.obj)
            ]
            version = str(self._version)
        answer = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version},
            "items": items,
        }
        return self._answer(verb, JSONResponse(answer))

    async def _watch(
        self,
        namespace: str,
        match: Callable[[Mapping[str, Any]], bool],
        since: int | None,
        timeout: float,
    ) -> AsyncIterator[bytes]:
        first: list[bytes] = []
        with self._lock:
            if since is None:  # the current state first, then what changes
                since = self._version
                first = [
                    _line("ADDED", self._checked(pod.obj))
                    for (ns, _), pod in self._pods.items()
                    if ns == namespace and match(pod.obj)
                ]
        for line in first:
            yield line
        end = time.monotonic() + timeout
        while time.monotonic() < end and self._server is not None and not self._server.should_exit:
            with self._lock:
                fresh = [e for e in self._events if e.version > since]
            for event in fresh:
                since = event.version
                if event.namespace == namespace and match(event.obj):
                    yield _line(event.kind, self._checked(event.obj))
            await asyncio.sleep(_TICK)

    async def _delete(self, request: Request) -> Response:
        namespace, name = request.path_params["ns"], request.path_params["name"]
        try:
            self._admit(request, "delete", namespace, "pods")
            grace_text = request.query_params.get("gracePeriodSeconds")
            with self._lock:
                pod = self._pods.get((namespace, name))
                if pod is None:
                    raise Refused(404, "NotFound", f'pods "{name}" not found')
                default = pod.obj["spec"].get("terminationGracePeriodSeconds", 30)
                grace = int(grace_text) if grace_text is not None else int(default)
                if grace < 0:
                    raise Refused(400, "BadRequest", "gracePeriodSeconds must be >= 0")
                real = request.query_params.get("dryRun") != "All"
                if real and self._mark_deleted(namespace, pod, grace):
                    self.deleted["user"] += 1
                answer = self._checked(pod.obj)
        except Refused as refused:
            return self._answer("delete", refused.response)
        return self._answer("delete", JSONResponse(answer))

    async def _review(self, request: Request) -> Response:
        try:
            self._admit(request, "review", None, "")
            body = await self._body(request, "SelfSubjectAccessReview", "authorization.k8s.io/v1")
        except Refused as refused:
            return self._answer("review", refused.response)
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        allowed = (
            attributes.get("resource") == "pods"
            and attributes.get("group", "") == ""
            and attributes.get("verb") in self.verbs
            and attributes.get("namespace") in self.namespaces
        )
        answer = {**body, "status": {"allowed": allowed}}
        return self._answer("review", JSONResponse(answer, status_code=201))

    # -- the pods' life (the kubelet and the garbage collector) -----------------------------

    def _store(self, namespace: str, body: dict[str, Any]) -> FakePod:
        obj = json.loads(json.dumps(body))
        meta = obj.setdefault("metadata", {})
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
        )
        spec = obj.setdefault("spec", {})
        spec.setdefault("terminationGracePeriodSeconds", 30)
        obj["status"] = {
            "phase": "Pending",
            "qosClass": _qos(spec),
            "conditions": [],
        }
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        pod = FakePod(obj=obj, created=time.monotonic())
        self.created += 1
        self._pods[(namespace, meta["name"])] = pod
        self._changed(namespace, pod, "ADDED")
        return pod

    def _changed(self, namespace: str, pod: FakePod, kind: str = "MODIFIED") -> None:
        self._version += 1
        pod.obj["metadata"]["resourceVersion"] = str(self._version)
        snapshot = json.loads(json.dumps(pod.obj))
        self._events.append(Event(self._version, kind, namespace, snapshot))

    def _mark_deleted(self, namespace: str, pod: FakePod, grace: int) -> bool:
        """Start a pod's deletion (again: a shorter grace still applies). True the first time:
        a pod deleted twice, or deleted and then shut down, is one deletion in the counts."""
        meta = pod.obj["metadata"]
        first = "deletionTimestamp" not in meta
        if first:
            meta["deletionTimestamp"] = _now()
            meta["deletionGracePeriodSeconds"] = grace
            self._changed(namespace, pod)
        process = pod.process
        if isinstance(process, PodContainer) and grace:
            process.terminate()
        elif isinstance(process, PodContainer):
            process.kill()
        elif process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        pod.kill_at = time.monotonic() + grace
        return first

    def _kubelet_loop(self) -> None:
        while not self._stopping.wait(_TICK):
            with self._lock:
                for (namespace, name), pod in list(self._pods.items()):
                    self._advance(namespace, name, pod)

    def _advance(self, namespace: str, name: str, pod: FakePod) -> None:
        now = time.monotonic()
        meta, status = pod.obj["metadata"], pod.status
        process = pod.process
        if "deletionTimestamp" in meta:
            if process is not None and process.poll() is None:
                if pod.kill_at is not None and now >= pod.kill_at:
                    _kill(process, wait=False)
                return
            _kill(process)  # an exited container is removed with its pod
            del self._pods[(namespace, name)]
            self._changed(namespace, pod, "DELETED")
            return
        if self._orphaned(namespace, meta):
            if self._mark_deleted(namespace, pod, 0):
                self.deleted["gc"] += 1
            return
        if pod.terminal:
            return
        if pod.started is None:
            if now - pod.created >= self.schedule_latency:
                self._schedule(namespace, pod)
            return
        deadline = pod.obj["spec"].get("activeDeadlineSeconds")
        if deadline is not None and now - pod.started >= float(deadline):
            _kill(process)
            self._terminate(
                pod,
                {"exitCode": 137, "reason": "Error"},
                phase="Failed",
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
            self._changed(namespace, pod)
            return
        container = pod.obj["spec"]["containers"][0]
        if process is None:
            # a pull that fails: ContainerCreating, ErrImagePull, then ImagePullBackOff
            state = status["containerStatuses"][0]["state"]
            waiting = (state.get("waiting") or {}).get("reason")
            if waiting == "ContainerCreating" and now - pod.started >= _TICK:
                state["waiting"] = {
                    "reason": "ErrImagePull",
                    "message": f'failed to pull and unpack image "{container["image"]}": not found',
                }
                self._changed(namespace, pod)
            elif waiting == "ErrImagePull" and now - pod.started >= self.pull_backoff:
                status["containerStatuses"][0]["state"]["waiting"] = {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{container["image"]}"',
                }
                self._changed(namespace, pod)
            return
        if isinstance(process, PodContainer) and "podIP" not in status and process.ip:
            status.update(podIP=process.ip, podIPs=[{"ip": process.ip}])  # the sandbox's
            self._changed(namespace, pod)
        code = process.poll()
        if code is not None:
            if isinstance(process, PodContainer) and process.error is not None:
                terminated = {"exitCode": 128, "reason": "StartError", "message": process.error}
            elif pod.oom or getattr(process, "oom_killed", False):
                terminated = {"exitCode": 137, "reason": "OOMKilled"}
            elif code < 0:
                terminated = {"exitCode": 128 - code, "reason": "Error"}
            else:
                terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            phase = "Succeeded" if terminated["reason"] == "Completed" else "Failed"
            self._terminate(pod, terminated, phase=phase)
            self._changed(namespace, pod)
            return
        if (
            status["phase"] == "Pending"
            and "podIP" in status
            and now - pod.started >= self.start_latency
        ):
            status["phase"] = "Running"
            status["containerStatuses"][0].update(
                state={"running": {"startedAt": _now()}}, ready=True, started=True
            )
            status["conditions"] = [
                {"type": t, "status": "True", "lastTransitionTime": _now()}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            self._changed(namespace, pod)

    def _orphaned(self, namespace: str, meta: Mapping[str, Any]) -> bool:
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"]
        if not owners:
            return False
        alive = {p.obj["metadata"]["uid"] for (ns, _), p in self._pods.items() if ns == namespace}
        return all(o.get("uid") not in alive for o in owners)

    def _schedule(self, namespace: str, pod: FakePod) -> None:
        status = pod.status
        if self.unschedulable:
            if not status["conditions"]:
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient memory.",
                        "lastTransitionTime": _now(),
                    }
                ]
                self._changed(namespace, pod)
            return
        pod.started = time.monotonic()
        container = pod.obj["spec"]["containers"][0]
        status.update(
            hostIP="127.0.0.1",
            startTime=_now(),
            conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}],
        )
        ip = ""
        if self.containers is None:  # a local process: its own loopback address
            pod.ip_index = self._allocate_ip()
            ip = f"127.0.0.{pod.ip_index}"
            status.update(podIP=ip, podIPs=[{"ip": ip}])
            pulled = self.images is None or container["image"] in self.images
        else:
            pulled = self.containers.resolve(str(container["image"])) is not None
        status["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ]
        self._changed(namespace, pod)
        if pulled and self.containers is not None:
            pod.process = self.containers.start(_launch(pod, ip))
        elif pulled:
            pod.process = self.process_factory(_launch(pod, ip))

    def _terminate(
        self, pod: FakePod, terminated: dict[str, Any], *, phase: str, **extra: str
    ) -> None:
        status = pod.status
        status.update(phase=phase, **extra)
        for container in status.get("containerStatuses") or []:
            container.update(
                ready=False,
                started=False,
                state={"terminated": {**terminated, "finishedAt": _now()}},
            )

    def _allocate_ip(self) -> int:
        used = {p.ip_index for p in self._pods.values()}
        for step in range(253):
            candidate = 2 + (self._next_ip - 2 + step) % 253
            if candidate not in used:
                self._next_ip = candidate + 1
                return candidate
        raise RuntimeError("the test server has no loopback address left (253 pods)")


def _line(kind: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _qos(spec: Mapping[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if all(r.get("limits") and r.get("requests") == r.get("limits") for r in resources):
        return "Guaranteed"
    return "Burstable" if any(resources) else "BestEffort"


def _launch(pod: FakePod, ip: str) -> WorkerLaunch:
    """The container as a local process: its env, listening on its pod IP at the port its
    `--grpc-addr` names."""
    container = pod.obj["spec"]["containers"][0]
    args = list(container.get("args") or [])
    port = 50051
    if "--grpc-addr" in args:
        port = int(args[args.index("--grpc-addr") + 1].rsplit(":", 1)[1])
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
    return WorkerLaunch(machine_id=pod.name, host=ip, port=port, env=env, config=pod.obj)


def _kill(process: subprocess.Popen[bytes] | PodContainer | None, *, wait: bool = True) -> None:
    if isinstance(process, PodContainer):
        process.kill()  # removes the container, running or exited
        return
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if wait:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
