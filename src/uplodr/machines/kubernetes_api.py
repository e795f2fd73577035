"""The Kubernetes API as the Kubernetes provider needs it: pods in one namespace, and two checks.

A thin typed layer over lightkube's `AsyncClient` (async, typed models of every core/v1 object,
watches that resume from the last resourceVersion): the provider above it never sees lightkube's
or httpx2's exceptions. Errors are mapped once, here:

- a request the API server never received (refused, no route, DNS, connect timeout) is
  WorkerUnavailable naming the server — NotCreated on a create, so the lease does not search
  for a pod that cannot exist; a server that answers 5xx or 429 is WorkerUnavailable too;
- a refusal because the namespace's ResourceQuota is used up ("exceeded quota") is Busy: it
  clears when other pods end;
- any other refusal (401, 403 RBAC, 404 namespace, 422 invalid pod) is ProviderError with the
  server's own message: retrying will not help;
- a pod that is not there is None (get) or False (delete), never an error.

Every method asks for exactly one verb on pods (create, get, list, watch, delete), which is
what the Role in deploy/kubernetes/ grants, plus SelfSubjectAccessReview, which every
authenticated account may create.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Pod

from uplodr.errors import Busy, NotCreated, ProviderError, UplodrError, WorkerUnavailable

API_TIMEOUT = 10.0  # seconds one request may take (a watch's reads excepted)
# A refused create because the namespace's quota is full clears as other pods end.
QUOTA_RETRY_AFTER = 5


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """In-cluster (the pod's service account) when running in a cluster, else the kubeconfig
    file `kubeconfig` or $KUBECONFIG or ~/.kube/config. ProviderError with one line when
    none is usable."""
    try:
        if kubeconfig:
            return KubeConfig.from_file(kubeconfig)
        return KubeConfig.from_env()
    except (ConfigError, OSError) as error:
        raise ProviderError(
            f"no Kubernetes configuration: not in a cluster and no kubeconfig ({error})"
        ) from None


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return " ".join(lines[0].split())[:300] if lines else ""


def _message(error: httpx2.HTTPStatusError) -> str:
    """The `message` of the API server's Status answer, else the HTTP reason."""
    with contextlib.suppress(Exception):
        body = error.response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    return error.response.reason_phrase


def _cause(error: BaseException) -> str:
    """The innermost OS-level reason of a transport error ("Connection refused")."""
    current: BaseException | None = error
    found = ""
    while current is not None:
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        current = current.__cause__ or current.__context__
    return found or _first_line(error) or type(error).__name__


class KubeApi:
    """Pods in `namespace` through `config` (see the module docstring for the errors)."""

    def __init__(
        self, config: KubeConfig, namespace: str | None = None, timeout: float = API_TIMEOUT
    ) -> None:
        self._config = config
        self._timeout = timeout
        self._client: AsyncClient | None = None
        current = config.get()
        if current is None:
            raise ProviderError("the Kubernetes configuration has no current context")
        self.namespace = namespace or current.namespace
        self.server = current.cluster.server

    def _client_now(self) -> AsyncClient:
        if self._client is None:
            try:
                self._client = AsyncClient(
                    self._config,
                    namespace=self.namespace,
                    timeout=httpx2.Timeout(self._timeout),
                    lazy=False,
                    field_manager="uplodr",
                )
            except ConfigError as error:
                raise ProviderError(f"unusable Kubernetes configuration: {error}") from None
        return self._client

    @contextlib.contextmanager
    def _said(self, action: str, *, creating: bool = False) -> Iterator[None]:
        try:
            yield
        except UplodrError:
            raise
        except ApiError as error:
            status = error.status
            code = int(status.code or 0) if status is not None else 0
            raise self._refused(action, code, status.message if status else error) from None
        except httpx2.HTTPStatusError as error:  # a watch's refusal is not made an ApiError
            raise self._refused(action, error.response.status_code, _message(error)) from None
        except httpx2.TransportError as error:
            never_sent = isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout)
            unreachable = NotCreated if creating and never_sent else WorkerUnavailable
            raise unreachable(
                f"Kubernetes API at {self.server} is unreachable: {_cause(error)}"
            ) from None

    def _refused(self, action: str, code: int, text: object) -> UplodrError:
        message = _first_line(text)
        if code == 403 and "exceeded quota" in message:
            return Busy(
                f"Kubernetes namespace {self.namespace} has no quota left for a worker pod: "
                f"{message}",
                retry_after=QUOTA_RETRY_AFTER,
            )
        if code == 429 or code >= 500:
            return WorkerUnavailable(f"Kubernetes API failed to {action} ({code}): {message}")
        return ProviderError(f"Kubernetes API refused to {action} ({code}): {message}")

    # -- pods ----------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod, *, dry_run: bool = False) -> Pod:
        with self._said("create a pod", creating=True):
            # the client's namespace (lightkube takes it from there for a namespaced create)
            created: Pod = await self._client_now().create(pod, dry_run=dry_run)
            return created

    async def get_pod(self, name: str) -> Pod | None:
        with self._said(f"get pod {name}"):
            try:
                found: Pod = await self._client_now().get(Pod, name, namespace=self.namespace)
            except ApiError as error:
                if error.status is not None and error.status.code == 404:
                    return None
                raise
            return found

    async def list_pods(self, labels: Mapping[str, str]) -> list[Pod]:
        with self._said("list pods"):
            selector: dict[str, Any] = dict(labels)
            listing = self._client_now().list(Pod, namespace=self.namespace, labels=selector)
            return [pod async for pod in listing]

    async def watch_pod(self, name: str, since: str | None) -> AsyncIterator[tuple[str, Pod]]:
        """Events ("ADDED", "MODIFIED", "DELETED") of pod `name` after resourceVersion `since`
        (None: its current state first, nothing at all while it does not exist). It only
        ends by an error: the client resumes a watch the server closed."""
        with self._said(f"watch pod {name}"):
            events = self._client_now().watch(
                Pod,
                namespace=self.namespace,
                fields={"metadata.name": name},
                resource_version=since,
            )
            async for kind, pod in events:
                yield kind, pod

    async def delete_pod(self, name: str, grace_seconds: int) -> bool:
        """Ask for the pod's deletion (its containers get SIGTERM, SIGKILL after the grace
        period); False when it was not there."""
        with self._said(f"delete pod {name}"):
            try:
                await self._client_now().delete(
                    Pod, name, namespace=self.namespace, grace_period=grace_seconds
                )
            except ApiError as error:
                if error.status is not None and error.status.code == 404:
                    return False
                raise
            return True

    # -- checks --------------------------------------------------------------------------------

    async def may(self, verb: str, resource: str = "pods") -> bool:
        """Whether this account may `verb` `resource` in the namespace (SelfSubjectAccessReview)."""
        review = SelfSubjectAccessReview(
            spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=ResourceAttributes(
                    namespace=self.namespace, verb=verb, resource=resource
                )
            )
        )
        with self._said(f"review access to {verb} {resource}"):
            answer: Any = await self._client_now().create(review)
        return bool(answer.status is not None and answer.status.allowed)

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
