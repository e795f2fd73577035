"""A stand-in worker image for the Docker provider's contract tests: made in a second from this
host's own `sh` and `sleep` (no debootstrap, no build), so the contract suite tests machines,
not the uplodr image.

    image = standin_image(client)       # "uplodr-test-standin:<hash>"

A container of it ignores its command (`worker --grpc-addr …`, as the provider gives it), writes
"written by the machine" to $CONTRACT_TOUCH when that is set, and sleeps; `docker kill` ends it
with signal 9 as a crash would.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import docker
from docker.errors import ImageNotFound

from tests.support.docker_engine import host_programs_image

STANDIN_REPO = "uplodr-test-standin"
SCRIPT = (
    'if [ -n "$CONTRACT_TOUCH" ]; then printf "written by the machine" > "$CONTRACT_TOUCH"; fi; '
    "exec sleep 600"
)


def standin_image(client: docker.DockerClient) -> str:
    base = host_programs_image(client, "sh", "sleep")
    shell = shutil.which("sh")  # where the image has it: the same path as on this host
    assert shell is not None
    entrypoint = [shell, "-c", SCRIPT, "standin"]  # the command's words become $1…
    tag = hashlib.sha256(f"{base}\n{shell}\n{SCRIPT}".encode()).hexdigest()[:16]
    name = f"{STANDIN_REPO}:{tag}"
    try:
        client.images.get(name)
        return name
    except ImageNotFound:
        pass
    container = client.containers.create(base, ["true"])
    try:
        container.commit(
            repository=STANDIN_REPO, tag=tag, changes=[f"ENTRYPOINT {json.dumps(entrypoint)}"]
        )
    finally:
        container.remove(force=True)
    return name
