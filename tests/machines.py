""""Machines" for the cluster tests, made of Linux namespaces on this one machine (imported by
tests/test_cluster*.py; pytest puts tests/ on the path).

A machine is a bash that ``unshare`` started in a private network, PID and mount namespace, as
PID 1 there: root's home is the machine's own (``/etc/passwd`` bind-mounted), ``/tmp/ray`` its
own, ``/mnt/shared`` one folder bind-mounted on every machine (the NFS export's stand-in), its own
sshd on its own address (Debian's OpenSSH with a config the test writes: key login only). Commands
run inside with ``nsenter``; killing PID 1 kills every process of the machine at once (the kernel
ends a PID namespace with its init), as a power loss would, and with its last process its network
namespace and veth go. Several machines are joined by veth pairs to a bridge inside the first one
(``join``), so their addresses exist only inside the namespaces and the first machine keeps its
address when another one dies.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TOOLS = {"sshd": "/usr/sbin/sshd", "rsync": shutil.which("rsync"), "unshare": shutil.which("unshare"), "ip": shutil.which("ip"),
         "ssh": shutil.which("ssh"), "nsenter": shutil.which("nsenter")}
MISSING = [name for name, path in TOOLS.items() if not path or not Path(path).exists()]
SKIP_REASON = f"needs root, namespaces and {MISSING or 'the tools'} (.ci/run installs sshd, rsync, iproute2)"


def namespaces() -> bool:
    """Whether this machine lets us make private network, PID and mount namespaces (a container may not)."""
    if MISSING or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount", "--mount-proc", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def keys(t: Path) -> None:
    """The user's SSH key (``t/key``, authorised on every machine) and the machines' host key."""
    for name in ("key", "host_key"):
        if not (t / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / name)], check=True)
    shutil.copy(t / "key.pub", t / "authorized_keys")


def wheelhouse(t: Path) -> Path:
    """What ``pip install -e`` needs besides this environment's packages: setuptools and wheel."""
    wheels = t / "wheels"
    if not wheels.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "setuptools>=68", "wheel"], check=True, timeout=300)
    return wheels


def machine_home(t: Path, name: str) -> Path:
    """A machine's home before ``ray up``: a shell whose PATH puts another ``python`` first (as
    pyenv or conda in ~/.bashrc do), and — to install offline, in seconds — a venv that sees this
    environment's packages and a pip that reads only a local wheelhouse."""
    home = t / name
    (home / "decoy").mkdir(parents=True)
    (home / "decoy" / "python").symlink_to(shutil.which("python3", path="/usr/bin:/bin"))
    for rc in (".bashrc", ".bash_profile"):
        (home / rc).write_text('export PATH="$HOME/decoy:$PATH"\n')
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)  # pip: this environment's
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "this-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for script, entry in (("ray", "ray.scripts.scripts"), ("pip", "pip._internal.cli.main")):
        (venv / "bin" / script).write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {entry} import main\nsys.exit(main())\n")
        (venv / "bin" / script).chmod(0o755)
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {wheelhouse(t)}\n")
    return home


def sshd_config(t: Path, name: str, address: str) -> Path:
    path = t / f"sshd_config.{name}"
    path.write_text(
        f"ListenAddress {address}\nPort 22\nHostKey {t / 'host_key'}\nPidFile {t / f'sshd.{name}.pid'}\n"
        f"AuthorizedKeysFile {t / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
    return path


def passwd(t: Path, name: str, home: Path) -> Path:
    """This machine's /etc/passwd: root's home is the machine's home."""
    lines = Path("/etc/passwd").read_text().splitlines()
    path = t / f"passwd.{name}"
    path.write_text("\n".join(f"root:x:0:0:root:{home}:/bin/bash" if line.startswith("root:") else line for line in lines) + "\n")
    return path


# PID 1 of a machine: its own root home, /tmp/ray and /mnt/shared (the shared folder, or — a
# machine whose export is not mounted there — a local tmpfs), then a loop that reaps orphans
BOOT = r"""
set -eu
ip link set lo up
mount --bind "{passwd}" /etc/passwd
mkdir -p /tmp/ray /run/sshd && mount --bind "{raytmp}" /tmp/ray
mount -t tmpfs tmpfs /mnt && mkdir /mnt/shared && {mount_shared}
echo up > "{ready}"
set +e
while true; do sleep 5 & wait $!; done
"""


class Machine:
    """A machine of namespaces (see the module's docstring); ``run`` a command inside it."""

    def __init__(self, t: Path, name: str, address: str, home: Path | None = None, shared: bool = True):
        self.t, self.name, self.address = t, name, address
        self.home = home or machine_home(t, name)
        raytmp = t / f"raytmp.{name}"
        raytmp.mkdir(exist_ok=True)
        (t / "shared").mkdir(exist_ok=True)
        ready = t / f"{name}.ready"
        ready.unlink(missing_ok=True)
        mount_shared = f'mount --bind "{t / "shared"}" /mnt/shared' if shared else "mount -t tmpfs other /mnt/shared"
        boot = BOOT.format(passwd=passwd(t, name, self.home), raytmp=raytmp, mount_shared=mount_shared, ready=ready)
        self.proc = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private",
                                      "bash", "-c", boot], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(t / f"{name}.boot.log", "w"))
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, (t / f"{name}.boot.log").read_text()
            time.sleep(0.1)
        self.pid = int(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()[0])  # PID 1 inside

    def _enter(self, argv: list[str] | str, cwd) -> list[str]:
        """``nsenter`` into every namespace of this machine, in ``cwd`` (entering a mount namespace
        otherwise leaves a command in its root)."""
        argv = ["bash", "-c", argv] if isinstance(argv, str) else argv
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", f"--wd={cwd or self.home}", "--", *argv]

    def run(self, argv: list[str] | str, env: dict | None = None, timeout: float = 600, cwd=None, **kw) -> subprocess.CompletedProcess:
        """A command in this machine (a string: through ``bash -c``), in ``cwd`` (default: the machine's home)."""
        return subprocess.run(self._enter(argv, cwd), env=env, timeout=timeout, **kw)

    def popen(self, argv: list[str] | str, env: dict | None = None, cwd=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self._enter(argv, cwd), env=env, **kw)

    def ip(self, *args: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.pid), "-n", "ip", *args], check=True, capture_output=True, timeout=30)

    def mount_shared(self) -> None:
        """Mount the shared folder at /mnt/shared (over whatever is there), as an admin fixing a node would."""
        self.run(f'umount /mnt/shared; mount --bind "{self.t / "shared"}" /mnt/shared', check=True, timeout=30)

    def start_sshd(self) -> None:
        self.run(["/usr/sbin/sshd", "-f", str(sshd_config(self.t, self.name, self.address)), "-E", str(self.t / f"sshd.{self.name}.log")],
                 check=True)

    def kill(self) -> None:
        """Every process of this machine at once (its PID namespace's init): a power loss."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=60)


def bridge(head: Machine, prefix: str = "10.231.0") -> None:
    """The first machine's side of the network (the switch: the user's machine in the cluster
    tests): a bridge holding its address (which stays when a machine joined to it dies) and the
    default route (Ray finds a node's address by the route out)."""
    head.ip("link", "add", "br0", "type", "bridge")
    head.ip("addr", "add", f"{head.address}/24", "dev", "br0")
    head.ip("link", "set", "br0", "up")
    head.ip("route", "add", "default", "dev", "br0")


def join(head: Machine, other: Machine) -> None:
    """A veth pair from ``head``'s bridge into ``other``, ``other`` on its address."""
    end = f"v{other.name[:10]}"
    head.ip("link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", str(other.pid))
    head.ip("link", "set", end, "master", "br0")
    head.ip("link", "set", end, "up")
    other.ip("addr", "add", f"{other.address}/24", "dev", "eth0")
    other.ip("link", "set", "eth0", "up")
    other.ip("route", "add", "default", "dev", "eth0")
