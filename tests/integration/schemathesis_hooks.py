"""Schemathesis hooks for ``test_schemathesis.py`` (loaded by the CLI through ``SCHEMATHESIS_HOOKS``).

OpenAPI describes each query parameter on its own; it cannot say "this one
only together with that one". The digits endpoint has a few such rules, each
stated in its parameter descriptions and refused with a 422 that says so
(tests/unit/test_api_query_checks.py, tests/integration/test_bad_input.py).
Schema-valid cases that break them are left out of the *positive* data here, so
that "valid data rejected" means a real gap between the schema and the server.
Parameters may come in the query string, a JSON body or both; a parameter in
both must have one value (a 422 otherwise, which the schema cannot state either),
and the rules hold for the merged parameters. Negative cases are left alone.

Generated files for the classify endpoint are random bytes, not images: the
415 they get is the documented answer (schemathesis.toml allows it there).
Turning them into PNGs in a hook was tried: schemathesis labels each case by
the part it made invalid, and a rewritten body no longer matches its label.
Real uploads are test_classify.py's and test_bad_input.py's.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

# The served stack's values, which the test passes in (the schema states the fixed ones).
MAX_DIGIT_IMAGES = int(os.environ.get("GENSERVE_MAX_DIGIT_IMAGES", "100"))
TIMESTEPS = int(os.environ.get("GENSERVE_DIFFUSION_TIMESTEPS", "400"))  # `num_train_timesteps` in GET /models
# The run's time budget, not a rule of the API: a positive digits case asks for at most this many images
# (fewer per label, never fewer labels), so the diffusion worker answers each in about a second on a small
# CPU. The range of `n` up to MAX_DIGIT_IMAGES is the end-to-end tests' (test_generate, test_bad_input).
BUDGET_DIGIT_IMAGES = int(os.environ.get("GENSERVE_ST_DIGIT_IMAGES", str(MAX_DIGIT_IMAGES)))


def _positive(case: Any) -> bool:
    """Every part of the case is schema-valid (a case can be negative in one part only)."""
    meta = case.meta
    return (
        meta is not None
        and meta.generation.mode.is_positive
        and all(component.mode.is_positive for component in meta.components.values())
    )


def _int(value: Any) -> int | None:
    # Some phases hand over query values as the strings they will send.
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def digits_rules_hold(query: dict[str, Any]) -> bool:
    """The documented rules across the digits endpoint's parameters."""
    labels = 1 if query.get("label") is not None else 10
    if labels * (_int(query.get("n", 10)) or 0) > MAX_DIGIT_IMAGES:  # labels x n <= MAX_DIGIT_IMAGES
        return False
    steps = _int(query.get("steps"))
    if steps is not None and steps > TIMESTEPS:  # at most the served model's timesteps
        return False
    if query.get("sampler") == "ddpm" and steps not in (None, TIMESTEPS):  # ddpm runs them all
        return False
    low, high = _int(query.get("guidance_from")), _int(query.get("guidance_to"))
    if (low is None) != (high is None):  # both or neither
        return False
    return low is None or high is None or low <= high  # a non-empty interval


def _body(case: Any) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


def sources_agree(query: dict[str, Any], body: dict[str, Any]) -> bool:
    """A parameter in both the query string and the JSON body has the same value in both."""
    for name in query.keys() & body.keys():
        value = body[name]
        if value is None or str(value).lower() != str(query[name]).lower():
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and _same_number(value, query[name])):
                return False
    return True


def _same_number(value: float, text: Any) -> bool:
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return False


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if context.operation is None or not _positive(case):
        return True
    query, body = dict(case.query or {}), _body(case)
    # A webhook's host must be one of the server's WEBHOOK_ALLOWED_HOSTS (test_webhooks.py tests it).
    if query.get("webhook") is not None or body.get("webhook") is not None:
        return False
    if not sources_agree(query, body):
        return False
    if context.operation.path != "/generate/digits":
        return True
    return digits_rules_hold({**query, **{k: v for k, v in body.items() if v is not None}})


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if context.operation is None or not _positive(case) or context.operation.path != "/generate/digits":
        return case
    query, body = dict(case.query or {}), _body(case)
    merged = {**query, **{k: v for k, v in body.items() if v is not None}}
    labels = 1 if merged.get("label") is not None else 10
    if labels * (_int(merged.get("n", 10)) or 0) > BUDGET_DIGIT_IMAGES:
        n = max(1, BUDGET_DIGIT_IMAGES // labels)
        if "n" in query:
            case.query = {**query, "n": n}
        if "n" in body:
            case.body = {**body, "n": n}
    return case
