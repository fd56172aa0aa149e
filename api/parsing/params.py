"""A job's parameters from the query string, a JSON body, or both, validated as one model.

``POST /generate/faces?n=8&seed=7``, the same POST with the body ``{"n": 8, "seed": 7}``,
and ``?n=8`` with ``{"seed": 7}`` are the same request. Whichever way they come:

- the query string is documented and checked as before: FastAPI reads it with a
  view of the model whose fields are all optional and that has no cross-field
  rules (``query_view``), after ``api.parsing.query_rules.strict_query`` has refused
  repeated, unknown and loosely written parameters;
- the body, when there is one, must be a JSON object (``Content-Type:
  application/json``); its values are checked strictly, as the JSON types the
  schema names (``{"n": "8"}`` is refused, not read as 8), and a key given twice
  is refused rather than one of them kept;
- a parameter in both must have the same value in both;
- then the merged parameters go through the route's model (``extra="forbid"``),
  so its ranges and cross-field rules apply to a mix as they do to either.

Every refusal is a ``RequestValidationError`` (or a 415 for a body of another
media type), so ``api.errors`` words it like every other parameter error.
A multipart route (``POST /classify/target-domain``) takes its parameters
from the query string only: its form fields other than the files are refused
(``api.routes.classify``), so none is silently ignored.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's signature, whose query
# model is made at run time (``query_view``).
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar, get_args

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from api.config import Settings
from api.deps import SettingsDep
from api.errors import InvalidParameter, UnsupportedMediaType, shorten
from contract.webhooks import check_webhook_url

M = TypeVar("M", bound=BaseModel)

JSON_MEDIA = "application/json"
QUERY, JSON = "query", "json"  # error locations; api.errors names them


def query_view(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` as the query string alone may carry it: the same fields, ranges, descriptions and
    examples, but each optional (a required one may come in the body) and no cross-field rules
    (their other half may come in the body). The full model checks the merged parameters."""
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        info = copy.copy(field)
        annotation = field.annotation
        if field.is_required():
            info.default = None
            annotation = annotation | None  # type: ignore[operator]
        fields[name] = (annotation, info)
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{model.__name__}Query", __config__=ConfigDict(extra="forbid"), **fields
    )


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The optional ``application/json`` request body of a route whose parameters are ``model``
    (for the route's ``openapi_extra``; ``api.openapi.document_settings`` puts this server's
    limits into it as into the query parameters)."""
    schema = model.model_json_schema(mode="validation")
    schema["description"] = (
        "The parameters as a JSON object instead of (or besides) the query string: the same names, ranges and "
        "defaults. A parameter given in both must have the same value in both."
    )
    # The body /docs fills in: each field's example, the values the query parameters show (so a client
    # that fills in both sends one request, not a conflict), but no webhook: that needs this server's
    # WEBHOOK_ALLOWED_HOSTS, and "Try it out" should work as it comes.
    example = {
        name: field.examples[0] for name, field in model.model_fields.items() if field.examples and name != "webhook"
    }
    return {"required": False, "content": {JSON_MEDIA: {"schema": schema, "example": example}}}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RequestValidationError(
                [
                    {
                        "type": "duplicate_parameter",
                        "loc": (JSON, key),
                        "msg": "is given twice in the JSON body: give it once, with the one value you mean",
                        "input": None,
                    }
                ]
            )
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; ``{}`` for an empty body (the parameters are all in the query)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != JSON_MEDIA:
        raise UnsupportedMediaType(
            f"the body is {media or 'of no declared type'!r}: send the parameters in the query string, or as a JSON "
            f'object with Content-Type: {JSON_MEDIA} (e.g. {{"n": 8, "seed": 7}})'
        )
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        if isinstance(err, RequestValidationError):
            raise
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": (JSON,),
                    "msg": f'is not valid JSON ({err}): send a JSON object, e.g. {{"n": 8, "seed": 7}}',
                    "input": None,
                }
            ]
        ) from None
    if not isinstance(body, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_type",
                    "loc": (JSON,),
                    "msg": (
                        f'must be a JSON object of parameters, e.g. {{"n": 8, "seed": 7}}, not a {type(body).__name__}'
                    ),
                    "input": None,
                }
            ]
        )
    return body


def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def _integer_field(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    if field is None:
        return False
    return field.annotation is int or int in get_args(field.annotation)


def json_integers(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: ``5.0`` is the integer 5 (JSON Schema says so too), ``5.5`` is not."""
    return {
        name: int(value) if isinstance(value, float) and value.is_integer() and _integer_field(model, name) else value
        for name, value in body.items()
    }


def merge(model: type[M], query: dict[str, Any], body: dict[str, Any]) -> M:
    """The query's parameters (already typed) and the body's (JSON values), validated as one ``model``."""
    body = json_integers(model, body)
    problems: list[dict[str, Any]] = []
    for name in sorted(query.keys() & body.keys()):
        if name not in model.model_fields:
            continue  # refused below as not a parameter
        try:
            value = _field_adapter(model, name).validate_python(body[name], strict=True)
        except ValidationError:
            continue  # refused below with the field's own message
        if value != query[name]:
            problems.append(
                {
                    "type": "conflicting_parameter",
                    "loc": (JSON, name),
                    "msg": (
                        f"is {shorten(repr(body[name]))} in the JSON body but {shorten(repr(query[name]))} in the "
                        "query string: give it once, or the same value in both"
                    ),
                    "input": None,
                }
            )
    if problems:
        raise RequestValidationError(problems)
    try:
        # Strict: the query's values are typed already, and the body's must be the JSON types the schema names.
        return model.model_validate({**query, **body}, strict=True)
    except ValidationError as err:
        raise RequestValidationError(
            [_located(error, body, whole=JSON if body else QUERY) for error in err.errors()]
        ) from None


def _located(error: Any, body: dict[str, Any], *, whole: str) -> dict[str, Any]:
    loc = tuple(error["loc"])
    source = (JSON if loc[0] in body else QUERY) if loc else whole
    return {**error, "loc": (source, *loc)}


def check_webhook(url: str | None, settings: Settings) -> None:
    """A job's ``webhook``, checked when the job is created (and again by the worker that calls it)."""
    if url is None:
        return
    try:
        check_webhook_url(url, settings.webhook_allowed_hosts)
    except ValueError as err:
        raise InvalidParameter(f"webhook: {err}") from None


def only_files(form: Any, files_field: str, query_model: type[BaseModel]) -> None:
    """A multipart route takes its parameters in the query string: a form field other than the files is
    refused with a 422 that says where it goes, rather than ignored."""
    problems = []
    for name in dict.fromkeys(key for key in form if key != files_field):
        where = (
            f"send it in the query string (?{name}=...)"
            if name in query_model.model_fields
            else f"this endpoint takes only {files_field!r} fields (check the name against /docs)"
        )
        problems.append(
            {
                "type": "extra_forbidden_form",
                "loc": ("body", name),
                "msg": f"is not read from the form: {where}",
                "input": None,
            }
        )
    if problems:
        raise RequestValidationError(problems)


def parameters(model: type[M]) -> Callable[..., Awaitable[M]]:
    """A dependency: ``model`` from the query string and the optional JSON body (see the module's doc)."""
    view = query_view(model)

    async def read(request: Request, query: Annotated[view, Query()], settings: SettingsDep) -> M:  # type: ignore[valid-type]
        merged = merge(model, query.model_dump(exclude_unset=True), await json_body(request))
        check_webhook(getattr(merged, "webhook", None), settings)
        return merged

    return read
