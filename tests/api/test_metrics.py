"""/metrics on a real node: Prometheus text, labelled by route template."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness import LiveServer
from penin.keys import Scope


def _samples(text: str, name: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_metrics_count_requests_by_route_template_and_status(live: LiveServer) -> None:
    token = live.token(Scope.ADMIN)
    with live.client(token) as http:
        for n in range(3):
            body = {"event_type": "app.metered", "payload": {"n": n}}
            assert http.post("/v1/ledger/records", json=body).status_code == 201
        assert http.get("/v1/ledger/records/1").status_code == 200
        assert http.get("/v1/ledger/records/2").status_code == 200
        assert http.get("/v1/ledger/records/999").status_code == 404
        assert http.get("/no/such/route").status_code == 404
        size = len(http.get("/v1/ledger/records").json()["records"])
        response = http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    requests = _samples(response.text, "penin_http_requests_total")
    by_labels = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in requests
    }
    assert by_labels[("/v1/ledger/records/{seq}", "GET", "200")] == 2
    assert by_labels[("/v1/ledger/records/{seq}", "GET", "404")] == 1
    assert by_labels[("/v1/ledger/records", "POST", "201")] == 3
    assert by_labels[("unmatched", "GET", "404")] == 1
    assert not [s for s in requests if s.labels["route"].endswith(("/1", "/999"))]
    assert _samples(response.text, "penin_ledger_records")[0].value == size


def test_metrics_declare_the_alerting_series(live: LiveServer) -> None:
    text = live.get("/metrics").text

    assert "# TYPE penin_errors_total counter" in text
    assert "# TYPE worm_replication_lag_seconds gauge" in text
    assert "# TYPE penin_http_request_duration_seconds histogram" in text


def test_methods_outside_the_standard_set_share_one_series(live: LiveServer) -> None:
    # WebDAV methods: the HTTP parser takes them, the node serves none of them.
    with live.client() as http:
        for method in ("PROPFIND", "MKCOL", "LOCK", "PURGE"):
            assert http.request(method, "/livez").status_code == 405
        response = http.get("/metrics")

    methods = {
        s.labels["method"] for s in _samples(response.text, "penin_http_requests_total")
    }
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "other"}
