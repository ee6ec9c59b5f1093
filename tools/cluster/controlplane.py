"""A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.

No scheduler and no kubelet: Pods the Job controller creates stay unscheduled, and a local
kubelet (``crawljob.local.kubelet``) runs them. Standard library only, so the tests and
the command line share it:

    python3 tools/cluster/controlplane.py start --dir /tmp/cp     # prints the kubeconfig path
    python3 tools/cluster/controlplane.py stop --dir /tmp/cp

The binaries come from ``tools/cluster/build.sh`` (Debian's kubernetes sources, built once and cached).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
HOST = "127.0.0.1"
# The controllers the tests need: Jobs, owner-reference garbage collection, namespace deletion,
# and service-account tokens (the ServiceAccount admission plugin refuses Pods without one).
CONTROLLERS = "job,garbagecollector,namespace,serviceaccount,serviceaccount-token"
COMPONENTS = ("kube-controller-manager", "kube-apiserver", "etcd")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says why and where the logs are."""


def build_binaries(log: Path | None = None) -> Path:
    """Run build.sh (a no-op once cached) and return the directory holding the two binaries."""
    if shutil.which("etcd") is None:
        raise ControlPlaneError("etcd is not installed (Debian package etcd-server)")
    stderr = log.open("ab") if log else None
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=stderr, text=True, check=False
        )
    finally:
        if stderr:
            stderr.close()
    if result.returncode != 0:
        where = f"; see {log}" if log else ""
        raise ControlPlaneError(f"building kube-apiserver/kube-controller-manager failed{where}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(pki: Path) -> None:
    """A self-signed CA, a serving certificate for 127.0.0.1/localhost, and a service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=crawljob-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)  # fmt: skip
    (pki / "san.cnf").write_text(
        "[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "apiserver.key", "-out", "apiserver.csr", cwd=pki)  # fmt: skip
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", "san.cnf", "-extensions", "ext", "-out", "apiserver.crt", cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(server: str, ca_file: Path, token: str, namespace: str = "default") -> str:
    """A kubeconfig (JSON is valid YAML) for *server* with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "crawljob-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "crawljob-test",
                "context": {"cluster": "crawljob-test", "user": "admin", "namespace": namespace},
            }
        ],
        "current-context": "crawljob-test",
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane: its directory (pki, logs, kubeconfig, pid files) and API address."""

    directory: Path
    server: str
    token: str

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.directory / "pki" / "ca.crt"


def _spawn(name: str, argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    log = (directory / "logs" / f"{name}.log").open("ab")
    # A new session: the components outlive `controlplane.py start`, and stop() signals each by pid.
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    (directory / f"{name}.pid").write_text(f"{process.pid}\n")
    (directory / f"{name}.argv").write_text(json.dumps(argv) + "\n")  # for restart()
    return process


def _wait(what: str, check: Callable[[], bool], processes: dict[str, subprocess.Popen[bytes]], directory: Path,
          timeout: float) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {process.returncode} while waiting for {what}; "
                    f"see {directory / 'logs' / (name + '.log')}"
                )
        if check():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"timed out after {timeout:.0f}s waiting for {what}; logs in {directory / 'logs'}"
            )
        time.sleep(0.2)


def _get(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def start(directory: Path, binaries: Path | None = None, timeout: float = 90.0) -> ControlPlane:
    """Start etcd, the apiserver and the controller-manager under *directory*; wait until ready."""
    directory = directory.resolve()
    stop(directory)
    for sub in ("pki", "logs"):
        shutil.rmtree(directory / sub, ignore_errors=True)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    binaries = binaries or build_binaries(directory / "logs" / "build.log")
    pki = directory / "pki"
    make_certificates(pki)
    token = secrets.token_hex(16)
    (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    etcd_dir = _etcd_data_dir(directory)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://{HOST}:{etcd_port}"
    server = f"https://{HOST}:{api_port}"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["etcd"] = _spawn(
            "etcd",
            ["etcd", "--name", "crawljob-test", "--data-dir", str(etcd_dir),
             "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
             "--listen-peer-urls", f"http://{HOST}:{peer_port}",
             "--initial-advertise-peer-urls", f"http://{HOST}:{peer_port}",
             "--initial-cluster", f"crawljob-test=http://{HOST}:{peer_port}",
             "--log-level", "warn", "--quota-backend-bytes", str(512 * 1024 * 1024)],
            directory,
        )  # fmt: skip
        _wait("etcd", lambda: _get(etcd_url + "/health")[0] == 200, processes, directory, timeout)
        processes["kube-apiserver"] = _spawn(
            "kube-apiserver",
            [str(binaries / "kube-apiserver"), "--etcd-servers", etcd_url,
             "--bind-address", HOST, "--advertise-address", HOST, "--secure-port", str(api_port),
             "--cert-dir", str(pki),
             "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
             "--client-ca-file", str(pki / "ca.crt"), "--token-auth-file", str(pki / "tokens.csv"),
             "--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.0.0.0/24",
             "--service-account-key-file", str(pki / "sa.pub"),
             "--service-account-signing-key-file", str(pki / "sa.key"),
             "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
             "--api-audiences", "https://kubernetes.default.svc.cluster.local",
             "--allow-privileged=true", "--profiling=false", "--endpoint-reconciler-type", "none",
             "--v", "1"],
            directory,
        )  # fmt: skip
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        _wait(
            "kube-apiserver /readyz",
            lambda: _get(server + "/readyz", token, context)[0] == 200,
            processes,
            directory,
            timeout,
        )
        (directory / "kubeconfig").write_text(kubeconfig_text(server, pki / "ca.crt", token))
        processes["kube-controller-manager"] = _spawn(
            "kube-controller-manager",
            [str(binaries / "kube-controller-manager"), "--kubeconfig", str(directory / "kubeconfig"),
             "--controllers", CONTROLLERS, "--leader-elect=false", "--port", "0", "--secure-port", "0",
             "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
             "--use-service-account-credentials=false", "--concurrent-gc-syncs", "5",
             "--v", "1"],
            directory,
        )  # fmt: skip
        # Ready when the service-account controllers have given "default" its token: from then on
        # Pods can be created, so the Job controller works.
        _wait(
            "the default ServiceAccount's token (kube-controller-manager)",
            lambda: _default_token_ready(server, token, context),
            processes,
            directory,
            timeout,
        )
    except BaseException:
        stop(directory)
        raise
    (directory / "server").write_text(server + "\n")
    return ControlPlane(directory=directory, server=server, token=token)


def _etcd_data_dir(directory: Path) -> Path:
    """A fresh etcd data directory, in memory when /dev/shm is usable (etcd 3.4 fsyncs every write)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="crawljob-etcd-", dir=shm))
        (directory / "etcd-dir").write_text(f"{path}\n")
        return path
    path = directory / "etcd"
    shutil.rmtree(path, ignore_errors=True)
    return path


def _default_token_ready(server: str, token: str, context: ssl.SSLContext) -> bool:
    status, body = _get(server + "/api/v1/namespaces/default/serviceaccounts/default", token, context)
    return status == 200 and bool(json.loads(body).get("secrets"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(directory: Path, timeout: float = 15.0) -> None:
    """Stop the components started under *directory* (by their recorded pids); idempotent."""
    for name in COMPONENTS:
        pid_file = directory / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text().strip() or 0)
        if pid and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        pid_file.unlink()
    etcd_dir_file = directory / "etcd-dir"
    if etcd_dir_file.exists():
        shutil.rmtree(etcd_dir_file.read_text().strip(), ignore_errors=True)
        etcd_dir_file.unlink()


def pause(directory: Path, name: str, timeout: float = 15.0) -> None:
    """Stop one component (SIGTERM, then SIGKILL); its data stays, restart() brings it back.

    For fault tests: the apiserver or etcd going away mid-run as in an upgrade or a failover.
    """
    pid_file = directory / f"{name}.pid"
    pid = int(pid_file.read_text().strip() or 0) if pid_file.exists() else 0
    if not pid or not _pid_alive(pid):
        raise ControlPlaneError(f"{name} is not running under {directory}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    pid_file.unlink()


def restart(plane: ControlPlane, name: str, timeout: float = 90.0) -> None:
    """Start a paused component again with its original command line; wait until it is ready."""
    argv = json.loads((plane.directory / f"{name}.argv").read_text())
    process = _spawn(name, argv, plane.directory)
    if name == "etcd":
        url = argv[argv.index("--listen-client-urls") + 1]
        _wait("etcd", lambda: _get(url + "/health")[0] == 200, {name: process}, plane.directory, timeout)
    elif name == "kube-apiserver":
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        _wait(
            "kube-apiserver /readyz",
            lambda: _get(plane.server + "/readyz", plane.token, context)[0] == 200,
            {name: process},
            plane.directory,
            timeout,
        )


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=("build", "start", "stop"))
    parser.add_argument("--dir", type=Path, default=Path(".cache/cluster"), help="state directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build_binaries())
        elif args.command == "start":
            plane = start(args.dir)
            print(f"export KUBECONFIG={plane.kubeconfig}  # API server {plane.server}")
        else:
            stop(args.dir.resolve())
    except ControlPlaneError as error:
        print(f"controlplane: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
