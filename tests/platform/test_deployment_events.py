"""A deployment's events carry a stable ``code`` and ``params`` beside the English message built from them
(platform/event_codes.py), so the console says them in the user's language."""

from __future__ import annotations

from tests.support.platformhelp import fake_model, make_client


def test_events_carry_their_code_and_params_beside_the_english_message():
    fake_model("tiny")
    with make_client() as api:  # the supervisor is off: the events of requests, and one it would write
        assert api.post("/api/v1/deployments", json={"model": "tiny", "name": "ev"}).status_code == 201
        assert api.patch("/api/v1/deployments/ev", json={"replicas": 2}).status_code == 200
        assert api.post("/api/v1/deployments/ev/stop").status_code == 200
        dep_id = api.get("/api/v1/deployments/ev").json()["id"]
        api.app.state.platform.deployments._event(dep_id, "ready", "replica_ready", replica=0, port=8123,
                                                  seconds=3.2)  # fmt: skip
        events = api.get("/api/v1/deployments/ev/events").json()["data"]
    said = [(e["event"], e["code"], e["params"], e["message"]) for e in events]
    assert said == [
        ("created", "created", {"model": "tiny", "name": "ev"}, "tiny as ev"),
        ("starting", "starting", {"replicas": 1}, "starting 1 replica(s)"),
        ("scaled", "scaled", {"before": 1, "replicas": 2}, "replicas 1 → 2"),
        ("stopped", "stopped_by_request", {}, "stopped by request"),
        ("ready", "replica_ready", {"replica": 0, "port": 8123, "seconds": 3.2},
         "replica 0 ready on port 8123 in 3.2s"),
    ], said  # fmt: skip
    assert events[2]["replicas"] == 2  # the params stay the event's own fields too, as before
