"""Hypothesis strategies for HTTP calls, built from an OpenAPI schema.

Each call picks one operation; at most one of its parameters gets a hostile value (integers
around the 32- and 64-bit limits, negative and absurd numbers, any text with NUL, tabs,
quotes and LIKE wildcards made common), the others get values their schema allows, with
``hints`` (seeded addresses and ids) mixed in so that calls also reach existing rows. JSON
bodies are schema-shaped objects, any JSON (with lone surrogates), or bytes that are not
JSON. The point is not to follow the schema but to find an input answered with a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

EDGE_INTS = [0, -1, 1, 2, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30]
# NUL four times: it is the one character a database (PostgreSQL) refuses outright.
SPECIAL_CHARS = list("\x00\x00\x00\x00\t\r\n'\"%_\\;,=@-+")
ODD_TEXT = ["", " ", "true", "null", "1e9", "0x10", " 1", "١٢", "%00", "../..", "'--"]

Schema = dict[str, Any]
Hints = dict[str, list[Any]]
Select = Callable[[str, str, Schema], bool]


@dataclass(frozen=True)
class Call:
    """One request, printable when it fails."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def texts(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text; two in three hold a character that databases, CSV or SQL treat specially."""
    spiked = st.builds(
        lambda head, odd, tail: (head + odd + tail)[:max_size],
        st.text(max_size=8),
        st.sampled_from(SPECIAL_CHARS),
        st.text(max_size=8),
    ).filter(lambda text: len(text) >= min_size)
    alone = st.sampled_from(SPECIAL_CHARS).filter(lambda _: min_size <= 1 <= max_size)
    return st.one_of(spiked, alone, st.text(min_size=min_size, max_size=max_size))


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(EDGE_INTS).map(str),
        st.integers().map(str),
        st.sampled_from(ODD_TEXT),
        texts(),
    )


def _resolve(schema: Schema, components: Schema) -> Schema:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved: Schema = components["schemas"][ref.rsplit("/", 1)[-1]]
        return resolved
    return schema


def shaped(
    schema: Schema, components: Schema, hints: Hints | None = None
) -> st.SearchStrategy[Any]:
    """A value of the schema's shape (types, enums and bounds honoured, patterns not)."""
    hints = hints or {}
    schema = _resolve(schema, components)
    if "anyOf" in schema:
        return st.one_of(*(shaped(s, components, hints) for s in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        return texts(schema.get("minLength", 0), schema.get("maxLength", 80))
    if kind == "object":
        properties: dict[str, Schema] = schema.get("properties", {})
        required = set(schema.get("required", []))

        def prop(name: str, sub: Schema) -> st.SearchStrategy[Any]:
            value = shaped(sub, components, hints)
            return st.sampled_from(hints[name]) | value if name in hints else value

        return st.fixed_dictionaries(
            {k: prop(k, v) for k, v in properties.items() if k in required},
            optional={k: prop(k, v) for k, v in properties.items() if k not in required},
        )
    return any_json()


def any_json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(EDGE_INTS),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(max_size=30),
        # Lone surrogates survive json.dumps as \udxxx escapes and come back as str.
        st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _as_query(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _param_value(
    name: str, schema: Schema, components: Schema, hints: Hints, *, hostile: bool
) -> st.SearchStrategy[str | None]:
    if hostile:
        return hostile_text()
    values = shaped(schema, components).map(_as_query)
    if name in hints:
        values = st.sampled_from([_as_query(v) for v in hints[name]]) | values
    return values


def _url_safe(text: str) -> str:
    """httpx cannot encode lone surrogates in a URL; send their bytes as hex instead."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text.encode("utf-8", "surrogatepass").hex()
    return text


@st.composite
def _json_body(draw: st.DrawFn, schema: Schema, components: Schema, hints: Hints) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=64))
    value = draw(shaped(schema, components, hints)) if choice < 7 else draw(any_json())
    return json.dumps(value).encode()


@st.composite
def _upload(draw: st.DrawFn, hints: Hints) -> dict[str, tuple[str, bytes, str]] | None:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return None
    if choice == 1:
        data = draw(st.binary(max_size=256))
    else:
        header = draw(st.sampled_from(["email", "email,languages,locale", "Email;Languages", ""]))
        cells = st.one_of(
            st.emails(),
            st.sampled_from(hints.get("email", ["a@example.org"])),
            texts(max_size=20),
            st.sampled_from(["en", "be ru", "xx", ";"]),
        )
        lines = draw(st.lists(st.lists(cells, min_size=1, max_size=3), max_size=5))
        text = "\n".join([header, *(",".join(line) for line in lines)])
        data = text.encode("utf-8", "surrogatepass")
    return {"file": ("people.csv", data, "text/csv")}


@st.composite
def calls(
    draw: st.DrawFn,
    schema: Schema,
    *,
    select: Select,
    auth: dict[str, str],
    hints: Hints | None = None,
) -> Call:
    """A call to one of the operations ``select(path, method, operation)`` accepts."""
    components = schema.get("components", {})
    hints = hints or {}
    operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if select(path, method, op)
    ]
    assert operations, "no operation matches"
    path, method, op = draw(st.sampled_from(operations))
    params: dict[str, str] = {}
    url = path
    parameters = op.get("parameters", [])
    # At most one parameter is hostile: a call with two bad parameters is refused for the
    # first one and never shows what the second would have done.
    hostile_at = draw(st.integers(-1, len(parameters) - 1))
    for index, parameter in enumerate(parameters):
        name, hostile = parameter["name"], index == hostile_at
        value = _param_value(name, parameter.get("schema", {}), components, hints, hostile=hostile)
        raw = draw(value)
        if raw is None:
            continue
        raw = _url_safe(raw)
        if parameter["in"] == "path":
            url = url.replace("{" + name + "}", quote(raw, safe=""))
        elif parameter["in"] == "query" and (
            hostile or parameter.get("required") or draw(st.integers(0, 3)) > 0
        ):
            params[name] = raw
    url = url.replace("{", "%7B").replace("}", "%7D")  # a path parameter drawn as None
    content: bytes | None = None
    files = None
    headers = dict(draw(st.sampled_from([auth] * 18 + [{}, {"Authorization": "Bearer wrong"}])))
    body = op.get("requestBody", {}).get("content", {})
    if "application/json" in body:
        content = draw(_json_body(body["application/json"]["schema"], components, hints))
        headers["Content-Type"] = "application/json"
    elif "multipart/form-data" in body:
        files = draw(_upload(hints))
    return Call(method.upper(), url, params, content, files, headers)


# Values put, one at a time, into every parameter and body field by ``single_faults``.
# NUL first: a fault that is accepted may change state (lift a suppression) and hide what the
# faults after it would have done to the same row.
FAULTS: list[Any] = [
    "\x00",
    "a\x00b",
    -1,
    0,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    "",
    "\t",
    "\r\n",
    "'",
    '"',
    "%",
    "_",
    "\\",
    "=1+1",
    "😀",
    "x" * 5000,
]
# Bodies that are not what any handler expects: empty, broken, the wrong JSON type, and JSON
# nested far deeper than Python's recursion limit (60 KB: under the 64 KB body cap, which
# answers 413 and may reset the connection while a client is still sending).
BODY_FAULTS = [b"", b"{", b"[]", b"null", b'"x"', b"[" * 30_000 + b"]" * 30_000]


def _base_value(name: str, schema: Schema, components: Schema, hints: Hints) -> Any:
    schema = _resolve(schema, components)
    if name in hints:
        return hints[name][0]
    if "default" in schema:
        return schema["default"]
    if "anyOf" in schema:
        usable = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _base_value(name, usable[0], components, hints) if usable else None
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "object":
        return {
            k: _base_value(k, v, components, hints) for k, v in schema.get("properties", {}).items()
        }
    return "x" * max(1, schema.get("minLength", 1))


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


def single_faults(
    schema: Schema,
    *,
    select: Select,
    auth: dict[str, str],
    hints: Hints,
    upload: Callable[[], bytes],
) -> list[Call]:
    """Every call that differs from a valid one in exactly one input: each parameter and
    each JSON body field set to each of ``FAULTS``, and each JSON body replaced by each of
    ``BODY_FAULTS``. ``upload()`` makes the file of each multipart call (a fresh one each
    time, so that every import creates rows and writes what it was given)."""
    return [
        call
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if select(path, method, op)
        for call in _faults_of(schema, path, method, op, auth=auth, hints=hints, upload=upload)
    ]


def _faults_of(
    schema: Schema,
    path: str,
    method: str,
    op: Schema,
    *,
    auth: dict[str, str],
    hints: Hints,
    upload: Callable[[], bytes],
) -> list[Call]:
    components = schema.get("components", {})
    parameters = op.get("parameters", [])
    in_path = {p["name"] for p in parameters if p["in"] == "path"}
    base = {
        p["name"]: _as_query(_base_value(p["name"], p["schema"], components, hints))
        for p in parameters
    }
    body = op.get("requestBody", {}).get("content", {})
    json_schema = body.get("application/json", {}).get("schema")
    base_body = _base_value("", json_schema, components, hints) if json_schema else None
    multipart = "multipart/form-data" in body
    headers = {**auth, "Content-Type": "application/json"} if json_schema else auth

    def call(values: dict[str, str | None], content: bytes | None) -> Call:
        url = _fill(path, {k: v or "" for k, v in values.items() if k in in_path})
        query = {k: v for k, v in values.items() if k not in in_path and v is not None}
        files = {"file": ("people.csv", upload(), "text/csv")} if multipart else None
        return Call(method.upper(), url, query, content, files, headers)

    encoded = json.dumps(base_body).encode() if json_schema else None
    found = [
        call({**base, name: _url_safe(str(fault))}, encoded) for name in base for fault in FAULTS
    ]
    if isinstance(base_body, dict):
        found += [
            call(base, json.dumps({**base_body, key: fault}).encode())
            for key in base_body
            for fault in FAULTS
        ]
    if json_schema:
        found += [call(base, raw) for raw in BODY_FAULTS]
    return found
