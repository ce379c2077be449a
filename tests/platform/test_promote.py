"""Eval-gated promotion (platform/rollouts.py): the gate refuses a worse model with both scores; the
canary's share of the gateway's traffic; confirm, rollback to the old answers, and a control plane killed in
the middle of a canary keeping its split. The end-to-end test runs on a real `tuneforge server` with the
deployment tests' home (a tiny chat model and two LoRA adapters on it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.platform.test_deployments import FT, _all_worker_pids, _events, _ready, home  # noqa: F401
from tests.support.platformhelp import wait_for

ASK = [{"role": "user", "content": "Give three tips for staying healthy."}]


# -- the gate and the split, without workers ---------------------------------------------------------------


def test_gate_text_is_checked():
    from tuneforge.errors import ConfigError
    from tuneforge.platform.rollouts import parse_gate

    assert str(parse_gate("rouge-l>=20")) == "rouge-l>=20" and parse_gate(" eval_loss < 2.5 ").value == 2.5
    for bad in ("accuracy>=3", "eval_loss>=", "eval_loss==1", "eval_loss<=nan", "eval_loss<=1e999"):
        with pytest.raises(ConfigError, match="METRIC>=VALUE"):
            parse_gate(bad)


def test_a_worse_model_is_refused_by_the_gate_with_both_scores():
    """The decision on finished evaluations, as the supervisor's tick takes it: refused, with both scores in
    the decision and the deployment's event, and no candidate deployment started."""
    from tuneforge.platform import deployments, rollouts
    from tuneforge.platform.app import build_platform
    from tuneforge.platform.db import Deployment, Job

    ctx, _ = build_platform()
    scores = {"candidate": {"eval_loss": 2.75, "rouge-l": 31.0}, "live": {"eval_loss": 2.5, "rouge-l": 30.0}}
    evals = {}
    with ctx.store.session() as s:
        for side, metrics in scores.items():
            job_id = f"job-00000000000{len(evals)}"
            folder = ctx.jobs_dir / job_id
            (folder / "eval").mkdir(parents=True)
            (folder / "eval" / "metrics.json").write_text(json.dumps({"models": {side: metrics}}))
            s.add(Job(id=job_id, kind="eval", state="succeeded", spec={}, folder=str(folder), extra={}))
            evals[side] = job_id
        s.add(
            Deployment(
                id="dep-000000000001", name="shop", model="live@1", base_model="tiny", adapters={},
                default_model_id="live", aliases={}, state="ready", desired="stopped", replicas=1,
                options={}, created_at=time.time(), requests=0,
                rollout={"stage": "evaluating", "model": "c@2", "gate": None, "share": 0.1, "evals": evals},
            )
        )  # fmt: skip
    rollouts.advance(ctx, deployments.list_all(ctx))
    ro = deployments.get(ctx, "shop").rollout
    assert ro["stage"] == "refused"
    # the English for the CLI, and its code and params (numbers) for the console's languages
    assert ro["decision"] == (
        "the candidate does worse than the live model: candidate eval_loss=2.75, live eval_loss=2.5 "
        "(lower is better)"
    )
    both = {"metric": "eval_loss", "candidate": 2.75, "live": 2.5}
    assert (ro["decision_code"], ro["decision_params"]) == ("gate_worse_lower_better", both)
    refused = [e for e in deployments.events(ctx, "shop") if e["event"] == "refused"]
    assert refused and refused[0]["message"] == ro["decision"] and refused[0]["scores"] == scores
    assert refused[0]["code"] == "gate_worse_lower_better" and refused[0]["params"]["candidate"] == 2.75
    assert [d.name for d in deployments.list_all(ctx)] == ["shop"]  # no canary started
    # a gate the candidate passes, but the live model does better on its metric: still refused
    d = rollouts.decide(rollouts.parse_gate("rouge-l>=30"), scores["live"], scores["candidate"])
    assert not d.passed and d.code == "gate_worse_higher_better"
    assert (d.params["candidate"], d.params["live"]) == (30.0, 31.0) and "rouge-l=30" in d.message
    d = rollouts.decide(rollouts.parse_gate("eval_loss<=2.6"), scores["live"], scores["candidate"])
    assert d.passed and d.code == "gate_passed" and d.params["gate"] == "eval_loss<=2.6"
    assert d.message == "gate eval_loss<=2.6 passed: candidate eval_loss=2.5, live eval_loss=2.75"
    # the scores keep four significant digits and stay numbers; a big one is said without ".0"
    d = rollouts.decide(None, {"eval_loss": 6.731775}, {"eval_loss": 7.051539})
    assert (d.passed, d.code) == (True, "gate_passed_no_worse") and d.params["candidate"] == 6.732
    assert d.message == "gate no worse than live passed: candidate eval_loss=6.732, live eval_loss=7.052"
    d = rollouts.decide(rollouts.parse_gate("perplexity<=2000"), {"perplexity": 1154.6}, {"perplexity": 1e3})
    assert "candidate perplexity=1155, live perplexity=1000 (lower is better)" in d.message
    ctx.store.dispose()


def test_auto_after_confirms_then_rollback_gives_the_name_back():
    """--auto-after: the tick confirms a canary whose time has come (the names swap, NAME's events follow
    the name); rollback swaps back and removes the candidate. Rows only: no worker is started."""
    from tuneforge.errors import ConflictError
    from tuneforge.platform import deployments, rollouts
    from tuneforge.platform.app import build_platform
    from tuneforge.platform.db import Deployment

    ctx, _ = build_platform()
    live, cand = "dep-00000000000a", "dep-00000000000b"
    canary = {"stage": "canary", "model": "c@2", "live_model": "live@1", "share": 0.1, "candidate": cand,
              "auto_at": time.time() - 1}  # fmt: skip
    with ctx.store.session() as s:
        for dep_id, name, model, rollout in (
            (live, "shop", "live@1", canary),
            (cand, "shop-canary", "c@2", {"stage": "candidate", "of": live}),
        ):
            s.add(
                Deployment(
                    id=dep_id, name=name, model=model, base_model="tiny", adapters={}, default_model_id=name,
                    aliases={}, state="ready", desired="stopped", replicas=1, options={},
                    created_at=time.time(), requests=0, rollout=rollout,
                )
            )  # fmt: skip
        deployments.add_event(s, live, "canary", "c@2 takes 10%")
    rollouts.advance(ctx, deployments.list_all(ctx))
    front = deployments.get(ctx, "shop")
    assert front.id == cand and front.rollout["stage"] == "promoted" and front.rollout["by"] == "auto"
    assert deployments.get(ctx, "shop-previous").id == live
    promoted = deployments.events(ctx, "shop")[-1]
    assert [e["event"] for e in deployments.events(ctx, "shop")] == ["canary", "promoted"]
    assert (promoted["code"], promoted["message"]) == (
        "promoted_auto", "c@2 takes all traffic (auto); live@1 stays up as shop-previous"
    )  # fmt: skip
    with pytest.raises(ConflictError, match="no canary to confirm"):
        rollouts.confirm(ctx, "shop")
    back = rollouts.rollback(ctx, "shop")
    assert back.id == live and back.rollout["stage"] == "rolled_back"
    assert [d.name for d in deployments.list_all(ctx)] == ["shop"]
    said = deployments.events(ctx, "shop")[-1]
    assert (said["event"], said["code"], said["message"]) == (
        "rolled_back", "rolled_back", "live@1 serves again; c@2 withdrawn"
    )  # fmt: skip
    # a canary whose candidate is gone ends the promotion, with the reason as English and as a code
    with ctx.store.session() as s:
        s.get(Deployment, live).rollout = {**canary, "auto_at": None}
    rollouts.advance(ctx, deployments.list_all(ctx))
    ro = deployments.get(ctx, "shop").rollout
    assert (ro["stage"], ro["reason"]) == ("failed", "the candidate deployment was removed")
    assert (ro["reason_code"], ro["reason_params"]) == ("candidate_removed", {})
    assert deployments.events(ctx, "shop")[-1]["code"] == "candidate_removed"
    ctx.store.dispose()


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 1 / 3])
def test_the_canary_gets_its_share_of_any_run_of_requests(share):
    from tuneforge.platform.rollouts import take_canary

    picks = [take_canary(f"dep-share-{share}", share) for _ in range(300)]
    for n in (10, 100, 300):
        assert abs(sum(picks[:n]) - share * n) <= 1, (n, sum(picks[:n]))


# -- end to end through the gateway -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(home):  # noqa: F811
    """A server of its own on the deployment tests' home (a kill and restart in the middle of a canary)."""
    import os
    import signal

    from tests.platform.test_platform_server import Server

    srv = Server(home)
    srv.start()
    yield srv
    srv.stop()
    for pid in _all_worker_pids(home):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _answers(http, n: int, model: str = "shop") -> list[str]:
    """Which worker model id answered each of ``n`` chats sent to ``model``."""
    out = []
    for _ in range(n):
        r = http.post("/v1/chat/completions", json={"model": model, "messages": ASK, "max_tokens": 1})
        assert r.status_code == 200, r.text
        out.append(r.json()["model"])
    return out


def test_promote_canary_restart_confirm_rollback(server, tmp_path: Path):
    http = server.http()
    data = tmp_path / "gate.jsonl"
    rows = [[{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}] for w in "abcdef"]
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    server.cli("datasets", "create", str(data), "--name", "gate")
    # the live model: FT (eval_loss 7.05 on these rows); the candidate: tiny-beta (6.73), doing better
    assert http.post("/api/v1/deployments", json={"model": FT, "name": "shop"}).status_code == 201
    _ready(http, "shop")
    chat = {"model": "shop", "messages": ASK, "max_tokens": 8, "temperature": 0}
    before = http.post("/v1/chat/completions", json=chat).json()

    # refused: the gate's threshold is out of reach; both scores are in the message and the exit code is 1
    out = server.cli("deployments", "promote", "shop", "--model", "tiny-beta@1", "--on", "gate",
                     "--gate", "eval_loss<=0.001", "--max-samples", "6", check=False)  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "gate eval_loss<=0.001 failed: candidate eval_loss=6.732, live eval_loss=7.052" in out.stderr

    # passes (the candidate does no worse than live on eval_loss; the evaluations are reused); 50 % canary
    out = server.cli("deployments", "promote", "shop", "--model", "tiny-beta@1", "--on", "gate",
                     "--canary", "50%", "--max-samples", "6", check=False)  # fmt: skip
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "canary: tiny-beta@1 takes 50% of shop's traffic" in out.stdout
    d = http.get("/api/v1/deployments/shop").json()
    assert d["rollout"]["evals"] == next(e for e in _events(http, "shop") if e["event"] == "promote")["evals"]
    cand = http.get(f"/api/v1/deployments/{d['rollout']['candidate']}").json()
    assert cand["name"] == "shop-canary" and cand["state"] == "ready"
    live_id, cand_id = d["default_model_id"], cand["default_model_id"]
    seen = _answers(http, 20)
    assert seen.count(cand_id) == 10 and seen.count(live_id) == 10

    server.kill()  # the control plane dies in the middle of the canary; its workers live on
    server.start()
    http = server.http()
    wait_for(lambda: http.get("/api/v1/deployments/shop-canary").json()["state"] == "ready", 30, "adopted")
    _ready(http, "shop", timeout=30)
    assert http.get("/api/v1/deployments/shop").json()["rollout"]["share"] == 0.5
    seen = _answers(http, 20)
    assert seen.count(cand_id) == 10 and seen.count(live_id) == 10  # the split survived the restart

    out = server.cli("deployments", "promote", "shop", "--confirm")
    assert "tiny-beta@1 takes all traffic" in out.stdout
    assert set(_answers(http, 4)) == {cand_id}
    names = {x["name"] for x in http.get("/api/v1/deployments").json()["data"]}
    assert names == {"shop", "shop-previous"}

    server.cli("deployments", "rollback", "shop")
    after = http.post("/v1/chat/completions", json=chat).json()
    assert after["choices"][0]["message"] == before["choices"][0]["message"]  # the old answers
    assert set(_answers(http, 4)) == {live_id}
    kinds = [e["event"] for e in _events(http, "shop")]
    for step in ("promote", "refused", "gate_passed", "canary", "promoted", "rolled_back"):
        assert step in kinds, (step, kinds)
    gate = next(e for e in _events(http, "shop") if e["event"] == "gate_passed")
    assert set(gate["scores"]) == {"candidate", "live"} and "eval_loss" in gate["scores"]["live"]
    # every step said with a code of the table (the console's languages), its English built from it
    from tuneforge.platform import event_codes

    said = {e["code"]: e for e in _events(http, "shop")}
    assert set(said) <= set(event_codes.MESSAGES), sorted(set(said) - set(event_codes.MESSAGES))
    assert {"promote_evaluating", "gate_failed", "gate_passed_no_worse", "canary_started"} <= set(said)
    assert said["canary_started"]["message"] == "tiny-beta@1 (shop-canary) takes 50% of traffic once ready"
    server.cli("deployments", "rm", "shop")
    assert http.get("/api/v1/deployments").json()["data"] == []


def test_the_cli_says_why_a_promotion_failed_after_its_gate_passed(capsys, monkeypatch):
    """The rollout keeps the gate's decision ("passed") beside the failure: the CLI said the decision."""
    from tests.support.clihelp import run_cli
    from tuneforge.cli import deployments as cli

    failed = {"stage": "failed", "decision": "gate eval_loss<=9 passed: …", "reason": "the canary exited"}

    class Answers:
        def post(self, path, json=None):
            return {"name": "shop", "rollout": {"stage": "evaluating"}}

        def get(self, path):
            return {"name": "shop", "rollout": failed}

    monkeypatch.setattr(cli, "Client", Answers)
    code, _, err = run_cli(capsys, "deployments", "promote", "shop", "--model", "c@2", "--on", "gate")
    assert code == 1 and "failed: the canary exited" in err and "passed" not in err, err
