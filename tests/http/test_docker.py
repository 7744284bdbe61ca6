"""The CPU image, built and run for real: Debian's dockerd started by hand (vfs storage, no
bridge, no iptables), a bookworm base image made locally with debootstrap (no registry is
reachable), `docker build --target cpu`, `docker run --network host`, then /health and one
/generate against the container, the user it runs as, and a clean `docker stop`.

The compose file is checked with the compose command the README documents (Debian 12's
`docker-compose`, installed by tools/setup.sh): it parses, has both services, and gives
`docker stop` more time than the server's shutdown grace.

Skips, with the reason, only where dockerd, docker-compose or debootstrap is missing or dockerd
cannot start.
The data root (FLASHGEN_DOCKER_ROOT, default /var/tmp/flashgen-docker) persists between runs, so
the base image is made once per machine.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from fg_http import ROOT

DROOT = os.environ.get("FLASHGEN_DOCKER_ROOT", "/var/tmp/flashgen-docker")
BASE = "flashgen-base:bookworm"
IMAGE = "flashgen:cpu-test"
BUILD_TIMEOUT = 900


def mirror():
    try:
        with open("/etc/apt/sources.list.d/debian.sources") as f:
            for line in f:
                if line.startswith("URIs:") and "security" not in line:
                    return line.split()[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def docker():
    dockerd = shutil.which("dockerd")
    cli = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
    if not dockerd or not cli:
        pytest.skip("dockerd not installed (apt-get install docker.io); Docker image not tested")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root here; Docker image not tested")
    os.makedirs(DROOT, exist_ok=True)
    sock = os.path.join(DROOT, "docker.sock")
    env = dict(os.environ, DOCKER_HOST="unix://" + sock, DOCKER_BUILDKIT="0")
    log = open(os.path.join(DROOT, "dockerd.log"), "w")
    proc = subprocess.Popen(
        [dockerd, "--data-root", os.path.join(DROOT, "data"), "--exec-root",
         os.path.join(DROOT, "exec"), "--pidfile", os.path.join(DROOT, "dockerd.pid"),
         "-H", "unix://" + sock, "--storage-driver", "vfs", "--iptables=false",
         "--ip-masq=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(*args, timeout=120, check=True, **kw):
        p = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=timeout,
                           **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    t0 = time.time()
    ready = False
    while time.time() - t0 < 40 and not ready:
        ready = run("version", check=False, timeout=10).returncode == 0
        if not ready:
            if proc.poll() is not None:  # exited: maybe a daemon of an earlier run holds the root
                ready = run("version", check=False, timeout=10).returncode == 0
                break
            time.sleep(0.5)
    if not ready:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        log.close()
        with open(os.path.join(DROOT, "dockerd.log")) as f:
            tail = f.read()[-2000:]
        pytest.skip("dockerd could not start here; Docker image not tested:\n" + tail)
    try:
        yield run
    finally:
        if proc.poll() is None:  # ours (not a daemon left by an earlier run): stop it by PID
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def ensure_base(run):
    if run("image", "inspect", BASE, check=False).returncode == 0:
        return
    deboot = shutil.which("debootstrap")
    if not deboot:
        pytest.skip("debootstrap not installed (apt-get install debootstrap): no base image")
    rootfs = os.path.join(DROOT, "rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)
    p = subprocess.run([deboot, "--variant=minbase", "bookworm", rootfs, mirror()],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for name in os.listdir(os.path.join(rootfs, d)):
            path = os.path.join(rootfs, d, name)
            if os.path.isfile(path):
                os.remove(path)
    # the sources the image's apt-get will use: the same mirror as this machine
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", rootfs, "-c", "."],
                           stdout=subprocess.PIPE)
    run("import", "--change", 'CMD ["/bin/bash"]', "-", BASE, stdin=tar.stdout, timeout=300)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def build_context():
    """Just what the Dockerfile copies (no models, no build folders)."""
    ctx = tempfile.mkdtemp(prefix="flashgen-ctx-")
    shutil.copy(os.path.join(ROOT, "Makefile"), ctx)
    ignore = shutil.ignore_patterns("*.o", "*.d", "__pycache__")
    for d in ("config", "kernels", "model", "server", "docker"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(ctx, d), ignore=ignore)
    return ctx


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cpu_image_builds_and_serves(docker):
    run = docker
    ensure_base(run)
    ctx = build_context()
    try:
        t0 = time.time()
        run("build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}", "--target", "cpu",
            "-f", "docker/Dockerfile", "-t", IMAGE, ".", cwd=ctx, timeout=BUILD_TIMEOUT)
        build_s = time.time() - t0
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    port = free_port()
    name = f"flashgen-test-{os.getpid()}"
    run("rm", "-f", name, check=False)
    models = os.path.join(ROOT, "models")
    run("run", "-d", "--name", name, "--network", "host", "-e", f"FLASHGEN_PORT={port}",
        "-v", f"{models}:/models:ro", IMAGE)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        ok = False
        while time.time() - t0 < 120:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    ok = True
                    break
            except requests.ConnectionError:
                pass
            state = run("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", run("logs", name, check=False).stderr[-3000:]
            time.sleep(0.5)
        assert ok, run("logs", name, check=False).stderr[-3000:]
        r = requests.post(url + "/generate", json={"inputs": "The capital of France is",
                                                   "parameters": {"max_new_tokens": 4}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["generated_text"]
        assert run("exec", name, "id", "-u").stdout.strip() == "10001"  # not root
        info = requests.get(url + "/info", timeout=5).json()
        assert info["model_device_type"] == "cpu"
        # Docker's own HEALTHCHECK turns healthy (first probe after its 10 s interval)
        t0 = time.time()
        health = ""
        while time.time() - t0 < 40:
            health = run("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
            if health == "healthy":
                break
            time.sleep(1)
        assert health == "healthy", health
        run("stop", "-t", "30", name, timeout=60)
        assert run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        logs = run("logs", name).stderr
        assert "stopped (exit 0)" in logs, logs[-2000:]
        print(f"docker build took {build_s:.0f} s")
    finally:
        run("rm", "-f", name, check=False)
        run("image", "prune", "-f", check=False)  # earlier builds' untagged layers (vfs copies)


def test_compose_file_with_the_documented_command():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    documented = re.findall(r"^(docker[ -]compose) -f docker/compose\.yaml up --build", readme, re.M)
    assert documented == ["docker-compose"], documented  # Debian 12: no `docker compose` plugin
    with open(os.path.join(ROOT, "tools", "setup.sh")) as f:
        assert re.search(r"\bdocker-compose\b", f.read().split("APT_PKGS=(", 1)[1].split(")")[0])
    cli = shutil.which("docker-compose")
    if not cli:
        pytest.skip("docker-compose not installed (tools/setup.sh installs it); compose file not "
                    "checked")
    compose = os.path.join(ROOT, "docker", "compose.yaml")

    def config(*args):
        p = subprocess.run([cli, "-f", compose, *args], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert p.returncode == 0, p.stderr
        return p.stdout

    assert sorted(config("--profile", "gpu", "config", "--services").split()) == [
        "flashgen", "flashgen-gpu"]
    full = config("--profile", "gpu", "config")
    graces = [float(g) for g in re.findall(r"stop_grace_period: (\d+)s", full)]
    assert len(graces) == 2 and all(g > 30 for g in graces), full  # shutdown_grace: 30 s
