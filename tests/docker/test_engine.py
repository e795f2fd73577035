"""The private engine leaves the host as it found it — also when the test process that started
it is SIGKILLed — and is private. (The engines of the first two tests are their own: they run
before the session's engine starts, so dockerd's shared host paths are compared too.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from tests.support.docker_engine import DockerEngine, host_programs_image
from tests.support.docker_host import cgroup_folders, clean_stale, host_state, links_on
from tests.support.paths import REPO


def test_an_engine_leaves_the_host_as_it_found_it() -> None:
    # An engine's start cleans what a killed earlier run left (as the second test shows); the
    # snapshot is taken after that, so it holds only what is not ours to clean.
    clean_stale()
    before = host_state()
    engine = DockerEngine(keep_data=False)
    engine.start()
    try:
        assert engine.process is not None and engine.root is not None
        dockerd, root, bridge = engine.process.pid, engine.root, engine.bridge
        with engine.client() as client:
            image = host_programs_image(client, "sleep")
            client.containers.run(image, ["sleep", "600"], detach=True, mem_limit="64m")
        veths = links_on(bridge)
        assert len(veths) == 1  # the running container is on the engine's own bridge
        assert cgroup_folders(bridge)  # and in the engine's own cgroups
    finally:
        engine.stop()  # with the container still running
    assert host_state() == before
    assert not psutil.pid_exists(dockerd) or psutil.Process(dockerd).status() == "zombie"
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(root) in " ".join(p.info["cmdline"] or [])
    ]
    assert not root.exists()
    assert not cgroup_folders(bridge)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [veth for veth in veths if f" {veth}@" in links or f" {veth}:" in links]


CHILD = textwrap.dedent(
    """
    import sys
    from tests.support.docker_engine import DockerEngine, host_programs_image
    engine = DockerEngine(keep_data=False)
    engine.start()
    with engine.client() as client:
        image = host_programs_image(client, "sleep")
        client.containers.run(image, ["sleep", "600"], detach=True)
    print(engine.root, engine.bridge, engine.process.pid, flush=True)
    sys.stdin.read()
    """
)


def test_an_engine_whose_test_process_was_killed_is_cleaned_by_the_next() -> None:
    clean_stale()
    before = host_state()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    root_text, bridge, dockerd = child.stdout.readline().split()
    root = Path(root_text)
    assert root.exists() and links_on(bridge)
    os.kill(child.pid, signal.SIGKILL)  # no finally, no atexit
    child.wait(timeout=30)
    assert root.exists()  # left behind ...
    assert root in clean_stale()  # ... until the next engine starts
    assert host_state() == before
    assert not root.exists()
    assert not cgroup_folders(bridge)
    assert not psutil.pid_exists(int(dockerd)) or psutil.Process(int(dockerd)).status() == "zombie"


def test_the_engine_uses_its_own_socket_state_and_bridge(docker_engine: DockerEngine) -> None:
    with docker_engine.client() as client:
        info = client.info()
        bridge = client.networks.get("bridge").attrs
    assert docker_engine.docker_host != "unix:///var/run/docker.sock"
    assert info["DockerRootDir"] == str(docker_engine.data_root)
    assert bridge["Options"]["com.docker.network.bridge.name"] == docker_engine.bridge
    assert bridge["IPAM"]["Config"][0]["Gateway"] == docker_engine.host_ip
    assert (
        "docker0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    )
