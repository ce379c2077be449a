"""What the control plane checks before it hands its jobs to a Ray cluster (``TUNEFORGE_EXECUTOR=ray``).

1. Security: an unauthenticated Ray job API is remote code execution for anyone who reaches it (the
   ShadowRay attacks). A request without a token must be refused by the cluster (401/403); one that is
   answered means anybody can submit jobs, and the executor refuses to start unless
   ``TUNEFORGE_RAY_ALLOW_UNAUTHENTICATED=1``. Our own requests carry Ray's token (``RAY_AUTH_TOKEN``, else
   the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``, as Ray's own clients read it).
2. Storage: every job writes its folder under TUNEFORGE_HOME on whichever node Ray picks, and the
   control plane reads it here. A marker file is written under TUNEFORGE_HOME and a probe job reads it
   on every alive node (ray_probe.py); when a node cannot see it the executor refuses to start, naming
   the nodes: a job placed there would fail or write where nobody reads. (A node that joins later is not
   probed: docs/ray.md says to restart the control plane after adding nodes.)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

import httpx

from tuneforge.errors import ConfigError
from tuneforge.settings import Settings, env_name

from .ray_executor import RayExecutor
from .ray_probe import PREFIX

log = logging.getLogger(__name__)
PROBE_PATH = "/api/jobs/tuneforge-auth-probe"  # no such job: 404 once past the auth check
MARKER = ".ray-storage-marker"
PROBE_TIMEOUT_S = 180.0


def ray_token() -> str | None:
    """Ray's token as Ray's clients find it."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _get(address: str, headers: dict[str, str]) -> int:
    try:
        return httpx.get(address + PROBE_PATH, headers=headers, timeout=15).status_code
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL (http://[::1) is no HTTPError
        raise ConfigError(
            f"{env_name('ray_address')}={address}: cannot reach the Ray cluster's job API "
            f"({type(exc).__name__}: {exc}). Set it to the dashboard's http://HOST:PORT (8265 by default)."
        ) from None


def check_auth(address: str, token: str | None, allow_unauthenticated: bool) -> dict[str, str]:
    """The headers our requests carry; ConfigError when the cluster takes jobs from anyone (and that was
    not allowed) or refuses our token."""
    anonymous = _get(address, {})
    if anonymous not in (401, 403):
        risk = (
            f"the Ray cluster at {address} accepts job submissions without a token (answered "
            f"{anonymous} to a request without one): anyone who reaches that port can run code on every "
            "node"
        )
        if not allow_unauthenticated:
            raise ConfigError(
                f"{risk}. Start the cluster with token authentication (RAY_AUTH_MODE=token and "
                f"RAY_AUTH_TOKEN on every node; docs/ray.md), or set "
                f"{env_name('ray_allow_unauthenticated')}=1 to accept the risk."
            )
        log.warning("%s; going on (%s=1)", risk, env_name("ray_allow_unauthenticated"))
    if token is None:
        if anonymous in (401, 403):
            raise ConfigError(
                f"the Ray cluster at {address} wants a token and this control plane has none: set "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH to a file holding it) to the cluster's token."
            )
        return {}
    headers = {"Authorization": f"Bearer {token}"}
    if _get(address, headers) in (401, 403):
        raise ConfigError(
            f"the Ray cluster at {address} refuses this control plane's token (RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH): set it to the token the cluster was started with."
        )
    return headers


def check_storage(executor: RayExecutor, home: Path) -> list[dict]:
    """The cluster's alive nodes (ip, gpus); ConfigError naming those that cannot read ``home``."""
    text = secrets.token_hex(16)
    marker = home / MARKER
    marker.write_text(text)
    rid = f"tuneforge-storage-probe-{text[:8]}"
    argv = [sys.executable, "-m", "tuneforge.jobs.ray_probe", str(marker), text]
    client = executor.client
    client.submit_job(entrypoint=shlex.join(argv), submission_id=rid, entrypoint_num_cpus=0)
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    try:
        while not client.get_job_status(rid).is_terminal():
            if time.monotonic() > deadline:
                client.stop_job(rid)
                raise ConfigError(
                    f"the storage probe on the Ray cluster ({rid}) did not finish in "
                    f"{PROBE_TIMEOUT_S:.0f}s; see it in Ray's dashboard"
                )
            time.sleep(0.5)
        logs = client.get_job_logs(rid)
    finally:
        marker.unlink(missing_ok=True)
    lines = [line for line in logs.splitlines() if line.startswith(PREFIX + " ")]
    if not lines:
        tail = "\n".join(logs.splitlines()[-10:])
        raise ConfigError(f"the storage probe on the Ray cluster ({rid}) failed; its log ends:\n{tail}")
    client.delete_job(rid)
    nodes = json.loads(lines[-1][len(PREFIX) + 1 :])["nodes"]
    blind = [n for n in nodes if n["problem"]]
    if blind:
        which = "; ".join(f"node {n['ip']} ({n['node_id'][:8]}): {n['problem']}" for n in blind)
        raise ConfigError(
            f"TUNEFORGE_HOME={home} is not shared with every Ray node ({which}). Mount one volume at "
            f"{home} on the control plane and on every node (an NFS or ReadWriteMany volume); jobs write "
            "their folders there."
        )
    return nodes


def connect(settings: Settings) -> RayExecutor:
    """The Ray executor for these settings, after the security and storage checks."""
    address = (settings.ray_address or "").rstrip("/")
    if not address:
        raise ConfigError(
            f"{env_name('executor')}=ray needs {env_name('ray_address')}: the Ray dashboard's "
            "http://HOST:8265"
        )
    if "://" not in address:
        address = "http://" + address
    headers = check_auth(address, ray_token(), settings.ray_allow_unauthenticated)
    try:
        executor = RayExecutor(address, headers)
    except OSError as exc:  # it answered the auth check, then not (a timeout, a dropped connection)
        raise ConfigError(
            f"{env_name('ray_address')}={address}: the Ray cluster's job API did not answer "
            f"({type(exc).__name__}: {exc}); check the dashboard's health and start again."
        ) from None
    settings.root.mkdir(parents=True, exist_ok=True)
    nodes = check_storage(executor, settings.root)
    executor.gpu_count = max((n["gpus"] for n in nodes), default=0)
    log.info(
        "Ray executor: %s, %d node(s) see %s, up to %d GPU(s) a node",
        address, len(nodes), settings.root, executor.gpu_count,
    )  # fmt: skip
    return executor
