"""The codes of a deployment's events, each with its English message.

An event the control plane records carries a stable ``code`` and its ``params`` beside the English
``message`` built from them here (the CLI prints that message; the web console says
``deployment_event.<code>`` from its message files in the user's language, filled with the same params).
This table is the one source of the English wording: tests/web/test_console.py checks that every code
has an entry in both of the console's languages, with the same placeholders. A detail that comes from
elsewhere (a health check's failure, an exception's text) is a param and stays in English; numbers stay
numbers (a float is written with up to six significant digits, the console formats it in its own way).
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
    # rollouts.py: an eval-gated promotion's steps. The gate's decision (gate_*) is also the rollout's
    # ``decision``, a failure (*_failed, candidate_*) its ``reason``; {candidate} and {live} are the scores.
    "promote_evaluating": "evaluating {model} and {live_model} on {dataset} (gate {gate})",
    "promote_evaluating_no_gate": (
        "evaluating {model} and {live_model} on {dataset} (gate no worse than live)"
    ),
    "gate_no_metric": "the evaluation reported no {metric} (candidate {candidate}, live {live})",
    "gate_failed": "gate {gate} failed: candidate {metric}={candidate}, live {metric}={live}",
    "gate_worse_lower_better": (
        "the candidate does worse than the live model: candidate {metric}={candidate}, live {metric}={live} "
        "(lower is better)"
    ),
    "gate_worse_higher_better": (
        "the candidate does worse than the live model: candidate {metric}={candidate}, live {metric}={live} "
        "(higher is better)"
    ),
    "gate_passed": "gate {gate} passed: candidate {metric}={candidate}, live {metric}={live}",
    "gate_passed_no_worse": (
        "gate no worse than live passed: candidate {metric}={candidate}, live {metric}={live}"
    ),
    "canary_started": "{model} ({name}) takes {percent}% of traffic once ready",
    "promoted_by_user": "{model} takes all traffic (user); {live_model} stays up as {previous}",
    "promoted_auto": "{model} takes all traffic (auto); {live_model} stays up as {previous}",
    "withdrawn_evaluating": "{model} withdrawn at stage evaluating; all traffic on {live_model}",
    "withdrawn_canary": "{model} withdrawn at stage canary; all traffic on {live_model}",
    "rolled_back": "{model} serves again; {withdrawn} withdrawn",
    "eval_failed_candidate": "the evaluation of the candidate model ({job}) failed: {reason}",
    "eval_failed_live": "the evaluation of the live model ({job}) failed: {reason}",
    "candidate_failed": "the candidate deployment failed: {reason}",
    "candidate_stopped": "the candidate deployment was stopped",
    "candidate_removed": "the candidate deployment was removed",
    "promote_failed": "{reason}",
}


def message(code: str, params: dict) -> str:
    """The English message of event ``code`` with its params."""
    shown = {k: f"{v:g}" if isinstance(v, float) else v for k, v in params.items()}  # 1155.0 → 1155
    return MESSAGES[code].format(**shown)
