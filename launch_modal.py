"""An interactive GPU box on Modal for notebook work: JupyterLab behind a random token, or SSH with your public key.

    modal run launch_modal.py                                                  # JupyterLab: prints its URL once
    modal run launch_modal.py --mode ssh --public-key ~/.ssh/id_ed25519.pub    # key-only SSH as root
    modal run launch_modal.py --gpu A100-80GB --idle-timeout 3600 --max-hours 4

The box runs the training image's pinned `gpu` set plus `dev` and `box` (pyproject.toml), has the repo at
/root/project (on PYTHONPATH) and the training volumes: HF cache at /cache, uploaded datasets at /data, Modal runs at
/runs. It stops after `--idle-timeout` seconds without a kernel, terminal or SSH connection, and after `--max-hours`
whatever happens. There is never a password: Jupyter takes a fresh `secrets.token_urlsafe` token, printed once with
the URL; sshd accepts public keys only. Anyone with the URL and token, or the private key, has a root shell on the box.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import modal
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moderation.config import validate_config
from moderation.errors import UserError, cli_main
from training.modal_app import REPO_ROOT, ModalSettings, gpu_environment, volumes

PROJECT = "/root/project"
JUPYTER_PORT = 8888
SSH_PORT = 22
POLL_S = 30
PUBLIC_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
NOT_UPLOADED = [".venv", ".git", "runs", "wandb", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]


class BoxConfig(BaseModel):
    """Everything a box needs; built from the `modal run launch_modal.py` options."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["jupyter", "ssh"] = Field("jupyter", description="JupyterLab with a token, or SSH with a key")
    public_key: str = Field("", description="ssh mode: the OpenSSH public key line allowed to log in")
    gpu: str = Field("L40S", description="Modal GPU type")
    idle_timeout_s: int = Field(1800, ge=60, description="stop after this long without a kernel or connection")
    timeout_s: int = Field(8 * 3600, ge=300, le=24 * 3600, description="hard limit on the box's lifetime")

    @model_validator(mode="after")
    def _ssh_needs_key(self) -> BoxConfig:
        if self.mode == "ssh" and not self.public_key:
            raise ValueError("--mode ssh needs --public-key ~/.ssh/id_ed25519.pub")
        return self


def read_public_key(path: Path) -> str:
    """The one OpenSSH public key line in `path`; a private key or anything else is refused."""
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read public key {path}: {error.strerror or error}") from None
    if "PRIVATE KEY" in text:
        raise UserError(f"{path} is a private key: pass the .pub file next to it")
    fields = text.split()
    if len(text.splitlines()) != 1 or len(fields) < 2 or fields[0] not in PUBLIC_KEY_TYPES:
        raise UserError(f"{path} is not an OpenSSH public key line (type, base64 key, comment)")
    return text


def new_token() -> str:
    """A fresh random Jupyter token (256 bits), different for every box."""
    return secrets.token_urlsafe(32)


def jupyter_command(idle_timeout_s: int, port: int = JUPYTER_PORT) -> list[str]:
    """JupyterLab on all interfaces (the tunnel connects from outside the container), culling idle kernels and
    shutting down when nothing has happened for `idle_timeout_s`. The token comes from $JUPYTER_TOKEN, so it never
    appears in the process list and Jupyter's own log masks it."""
    return [
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ip=0.0.0.0",
        f"--port={port}",
        f"--ServerApp.root_dir={PROJECT}",
        "--ServerApp.allow_remote_access=True",
        f"--ServerApp.shutdown_no_activity_timeout={idle_timeout_s}",
        f"--MappingKernelManager.cull_idle_timeout={idle_timeout_s}",
        f"--MappingKernelManager.cull_interval={POLL_S}",
        f"--TerminalManager.cull_inactive_timeout={idle_timeout_s}",
    ]


def sshd_config(port: int = SSH_PORT) -> str:
    """An sshd_config that accepts public keys only: no passwords, no keyboard-interactive, root by key alone."""
    return (
        "\n".join(
            [
                f"Port {port}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "AuthenticationMethods publickey",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitEmptyPasswords no",
                "UsePAM no",
                "X11Forwarding no",
                "ClientAliveInterval 60",
                "Subsystem sftp internal-sftp",
            ]
        )
        + "\n"
    )


def established_connections(proc_net_tcp: str, port: int) -> int:
    """How many TCP connections to local `port` are established, from the text of /proc/net/tcp or tcp6."""
    count = 0
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].rsplit(":", 1)[-1] == f"{port:04X}" and fields[3] == "01":
            count += 1
    return count


def wait_until_idle(busy: Callable[[], bool], idle_timeout_s: float, clock=time.monotonic, sleep=time.sleep) -> None:
    """Return once `busy()` has been false for `idle_timeout_s` in a row (checked every POLL_S seconds)."""
    last_busy = clock()
    while clock() - last_busy < idle_timeout_s:
        sleep(POLL_S)
        if busy():
            last_busy = clock()


def box_options(config: BoxConfig) -> dict:
    """GPU, lifetime and the training volumes (same HF cache, datasets and runs)."""
    return {"gpu": config.gpu, "timeout": config.timeout_s, "volumes": volumes(ModalSettings())}


DEFAULTS = BoxConfig()
app = modal.App("grpo-moderation-box")
image = (
    gpu_environment("dev", "box")
    .apt_install("openssh-server")
    .env({"PYTHONPATH": PROJECT})
    .add_local_dir(REPO_ROOT, PROJECT, ignore=NOT_UPLOADED)
)


@app.function(image=image, **box_options(DEFAULTS))
def box(config_json: str) -> None:
    """The container side: serve Jupyter or sshd through a Modal tunnel until idle."""
    config = BoxConfig.model_validate_json(config_json)
    if config.mode == "ssh":
        serve_ssh(config)
    else:
        serve_jupyter(config)


def serve_jupyter(config: BoxConfig) -> None:
    token = new_token()
    server = subprocess.Popen(jupyter_command(config.idle_timeout_s), env={**os.environ, "JUPYTER_TOKEN": token})
    with modal.forward(JUPYTER_PORT) as tunnel:
        print(f"JupyterLab (token printed once, keep it private): {tunnel.url}/lab?token={token}", flush=True)
        server.wait()  # Jupyter exits by itself after idle_timeout_s without activity


def serve_ssh(config: BoxConfig) -> None:
    ssh_dir = Path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(config.public_key + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    Path("/etc/ssh/sshd_config").write_text(sshd_config())
    Path("/run/sshd").mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-A"], check=True)  # fresh host keys for this box
    subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"])
    with modal.forward(SSH_PORT, unencrypted=True) as tunnel:
        host, port = tunnel.tcp_socket
        print(f"ssh -p {port} root@{host}    (key only; repo in {PROJECT})", flush=True)
        wait_until_idle(lambda: established_connections(_proc_net_tcp(), SSH_PORT) > 0, config.idle_timeout_s)


def _proc_net_tcp() -> str:
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    return "".join(table.read_text() for table in tables if table.exists())


@app.local_entrypoint()
@cli_main
def main(
    mode: str = DEFAULTS.mode,
    public_key: str = "",
    gpu: str = DEFAULTS.gpu,
    idle_timeout: int = DEFAULTS.idle_timeout_s,
    max_hours: float = DEFAULTS.timeout_s / 3600,
) -> None:
    """Validate the options here, then start the box and stream its output (the URL or ssh command) until it stops."""
    values = {"mode": mode, "gpu": gpu, "idle_timeout_s": idle_timeout, "timeout_s": int(max_hours * 3600)}
    if public_key:
        values["public_key"] = read_public_key(Path(public_key))
    config = validate_config(BoxConfig, values)
    box.with_options(**box_options(config)).remote(config.model_dump_json())
