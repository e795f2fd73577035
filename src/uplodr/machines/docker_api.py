"""The Docker Engine API as the Docker provider needs it: containers, networks, two checks.

A thin typed layer over the docker SDK (`docker.from_env`, made on first use, so building a
provider never asks the engine anything): the provider above it never sees the SDK's or
requests' exceptions. The SDK blocks, so every call runs in this client's own threads
(`call`): a call to an engine that hangs blocks one of them for up to the API timeout, never
the event loop's default threads, which the gateway's local store and everything else share.
Errors are mapped once, here:

- a request the engine never received (no socket, refused, no route, a connect timeout) is
  WorkerUnavailable naming the engine — NotCreated on a create, so the lease does not search
  for a container that cannot exist; an engine that answers 5xx is WorkerUnavailable too;
- any refusal (4xx: an image it does not have, more CPUs than it has) is ProviderError with
  the engine's own words: retrying will not help;
- a container, image or network that is not there is None, False or '' — never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from uplodr.errors import NotCreated, ProviderError, UplodrError, WorkerUnavailable

if TYPE_CHECKING:  # the docker SDK belongs to the `server` extra: imported when first used
    from docker import DockerClient

T = TypeVar("T")

DEFAULT_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT = 30  # seconds one Engine API request may take
_POLL = 0.05  # seconds between tries at removing a container another remove holds
# OS errors of a connection that was never made: the request was not sent.
_NOT_CONNECTED = frozenset(
    {errno.ENOENT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


def _cause(error: BaseException) -> str:
    """The innermost OS-level reason in a docker/requests error ("Connection refused"), else
    the error's first line."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    found = ""
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    if found:
        return found
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _never_sent(error: BaseException) -> bool:
    """True when a docker/requests error shows the connection was never made (no socket,
    refused, no route, a connect timeout), so the engine cannot have acted on the request."""
    from requests.exceptions import ConnectTimeout

    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectTimeout):
            return True
        if isinstance(current, OSError) and current.errno in _NOT_CONNECTED:
            return True
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


class DockerApi:
    """The engine `engine_env` names (DOCKER_HOST and the TLS variables, as docker.from_env
    reads them). Its methods block: run them with `call` (see the module docstring)."""

    def __init__(self, engine_env: Mapping[str, str] | None, timeout: int = API_TIMEOUT) -> None:
        self._env = dict(engine_env or {})
        self.host = self._env.get("DOCKER_HOST") or DEFAULT_HOST
        self._timeout = timeout
        self._client: DockerClient | None = None
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="uplodr-docker")

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in this client's threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(work, *args)
        )

    @contextlib.contextmanager
    def said(self, action: str, *, creating: bool = False) -> Iterator[None]:
        """Docker's errors as ours. `creating`: a request that never reached the engine is
        NotCreated (the lease then knows there is no container to look for)."""
        from docker.errors import APIError, DockerException

        try:
            yield
        except UplodrError:
            raise
        except APIError as error:
            status = error.status_code or 0
            explanation = " ".join(str(error.explanation or error).split())[:300]
            if 400 <= status < 500:
                raise ProviderError(f"Docker engine refused to {action}: {explanation}") from None
            raise WorkerUnavailable(
                f"Docker engine failed to {action} ({status}): {explanation}"
            ) from None
        except (DockerException, OSError) as error:
            unreachable = NotCreated if creating and _never_sent(error) else WorkerUnavailable
            raise unreachable(
                f"Docker engine at {self.host} is unreachable: {_cause(error)}"
            ) from None

    def client(self, *, creating: bool = False) -> DockerClient:
        """The client, made on first use (the SDK asks the engine for its API version). Made
        outside the lock: an engine that accepts but never answers would otherwise hold every
        other call, and `close`, for the whole API timeout."""
        with self._lock:
            if self._client is not None:
                return self._client
        import docker

        with self.said("answer", creating=creating):
            made = docker.from_env(environment=self._env, timeout=self._timeout, version="auto")
        with self._lock:
            if self._client is None:
                self._client = made
                return made
            kept = self._client
        made.close()  # another thread made one first
        return kept

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def shutdown(self) -> None:
        """Stop the threads; a call that hangs ends on its own (API timeout)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- the engine ---------------------------------------------------------------------------

    def ping(self) -> None:
        client = self.client()
        with self.said("answer a ping"):
            client.ping()

    def data_root(self) -> str:
        """The engine's data root (DockerRootDir), '' when it does not say."""
        client = self.client()
        with self.said("describe itself"):
            return str(client.info().get("DockerRootDir") or "")

    # -- images and networks ------------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        from docker.errors import ImageNotFound

        client = self.client()
        with self.said(f"look up image {image}"):
            try:
                client.images.get(image)
            except ImageNotFound:
                return False
        return True

    def has_network(self, name: str) -> bool:
        from docker.errors import NotFound

        client = self.client()
        with self.said(f"look up network {name}"):
            try:
                client.networks.get(name)
            except NotFound:
                return False
        return True

    def networks(self, name: str) -> list[dict[str, Any]]:
        """The engine's list entries of the networks named exactly `name` (the engine's
        `names` filter matches substrings)."""
        client = self.client(creating=True)
        with self.said(f"make network {name}", creating=True):
            return [n.attrs for n in client.networks.list(names=[name]) if n.name == name]

    def create_network(
        self, name: str, *, options: Mapping[str, str], labels: Mapping[str, str]
    ) -> None:
        """An internal bridge network; one made meanwhile by someone else (409) is fine."""
        from docker.errors import APIError

        client = self.client(creating=True)
        with self.said(f"make network {name}", creating=True):
            try:
                client.networks.create(
                    name, driver="bridge", internal=True, options=dict(options), labels=dict(labels)
                )
            except APIError as error:
                if error.status_code != 409:  # 409: made by another gateway meanwhile
                    raise

    # -- containers ---------------------------------------------------------------------------

    def create_container(self, image: str, command: list[str], **options: Any) -> str:
        """Create (not start) a container; its id. An image the engine does not have is
        ProviderError saying how to build it there."""
        from docker.errors import ImageNotFound

        client = self.client(creating=True)
        with self.said(f"create a container of {image}", creating=True):
            try:
                container = client.containers.create(image, command, **options)
            except ImageNotFound:
                raise ProviderError(
                    f"image {image} is not in the Docker engine at {self.host} "
                    f"(build it there: docker build -t {image} .)"
                ) from None
        return str(container.id)

    def start(self, container_id: str, image: str) -> dict[str, Any]:
        """Start the container; its inspect data then."""
        client = self.client()
        with self.said(f"start a container of {image}"):
            client.api.start(container_id)
            attrs: dict[str, Any] = client.api.inspect_container(container_id)
        return attrs

    def inspect(self, name: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with self.said(f"inspect container {name}"):
            try:
                attrs: dict[str, Any] = self.client().api.inspect_container(name)
            except NotFound:
                return None
        return attrs

    def logs(self, name: str, tail: int) -> str:
        """The last `tail` lines the container logged, or '' when it is gone."""
        from docker.errors import NotFound

        with self.said(f"read the log of container {name}"):
            try:
                raw = self.client().api.logs(name, stdout=True, stderr=True, tail=tail)
            except NotFound:
                return ""
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    def containers(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Containers, running or not, with all these labels (the engine's list entries)."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with self.said("list containers"):
            found: list[dict[str, Any]] = self.client().api.containers(all=True, filters=filters)
        return found

    def remove(self, container_id: str, name: str) -> None:
        """Remove the container (killing it) and its anonymous volumes, and return once it is
        gone; one that is not there is not an error."""
        from docker.errors import APIError, NotFound

        deadline = time.monotonic() + self._timeout
        with self.said(f"remove container {name}"):
            while True:
                try:
                    self.client().api.remove_container(container_id, force=True, v=True)
                    return
                except NotFound:
                    return
                except APIError as error:
                    # 409: another remove is under way; it returns once that one is done
                    if error.status_code != 409 or time.monotonic() > deadline:
                        raise
                time.sleep(_POLL)
