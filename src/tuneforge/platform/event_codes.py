"""The codes of a deployment's events, each with its English message.

An event the control plane records carries a stable ``code`` and its ``params`` beside the English
``message`` built from them here (the CLI prints that message; the web console says
``deployment_event.<code>`` from its message files in the user's language, filled with the same params).
This table is the one source of the English wording: tests/web/test_console.py checks that every code
has an entry in both of the console's languages, with the same placeholders. A detail that comes from
elsewhere (a health check's failure, an exception's text) is a param and stays in English.
"""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    # deployments.py: what a request did
    "created": "{model} as {name}",
    "starting": "starting {replicas} replica(s)",
    "stopped_by_request": "stopped by request",
    "started_by_request": "started by request",
    "scaled": "replicas {before} → {replicas}",
    # replicas.py: what the supervisor saw
    "replica_ready": "replica {replica} ready on port {port} in {seconds}s",
    "replica_back": "replica {replica} answers again after {seconds}s: back in rotation",
    "replica_unhealthy": "replica {replica} (pid {pid}) {problem}: out of rotation",
    "replica_exited": "replica {replica} (pid {pid}) exited with code {exit_code}; restarting in {seconds}s",
    "replica_unresponsive": "replica {replica} (pid {pid}) {why}; restarting in {seconds}s",
    "replica_waiting_gpu": "replica {replica} waits for a GPU: all {gpus} are held by jobs and deployments",
    "replica_removed": "replica {replica} removed (pid {pid})",
    "replica_removed_unstarted": "replica {replica} removed",
    "replica_adopted": "replica {replica}: adopted running worker pid {pid}",
    "control_plane_restarted": "control plane restarted: starting its workers again",
    "failed": "{reason}",
}


def message(code: str, params: dict) -> str:
    """The English message of event ``code`` with its params."""
    return MESSAGES[code].format(**params)
