"""A bounded schemathesis run against a real served app (Serve on a local Ray cluster, debug preset): requests
generated from /openapi.json (valid and invalid ones), about 20 per operation. None may get a 5xx, and every
answer must match the status codes, content types and schemas the OpenAPI document declares."""
from __future__ import annotations

import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, Phase, given, settings


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_schema(ray_cluster, tmp_path_factory):
    from ray import serve

    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.run import start_http

    url = f"http://127.0.0.1:{start_http('127.0.0.1')}"
    cfg = ServeConfig(policy="debug", rollout_workers=1, rollout_max_steps=8, rollout_default_steps=4,
                      rollout_queue=2, max_sessions=64, max_payload_bytes=1_000_000, video_height=64)
    serve.run(build_app(cfg), name="schema", route_prefix="/",
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    serve.delete("schema")


# No 5xx, and every answer as documented. Not "positive data acceptance": the schema cannot say every rule
# (exactly one goal, the model's embedding width, a decodable image, an existing session id), which answer 4xx.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]


def test_generated_requests_get_no_5xx_and_match_the_schema(api_schema):
    """Every operation, 20 generated cases each (no shrinking: a failure is reported as found). Each case runs
    schemathesis's default checks: no server error, a documented status code, content type, headers and body."""
    failures, calls = [], 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            nonlocal calls
            calls += 1
            case.call_and_validate(timeout=60, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert calls >= 150, calls
