"""Postgres changes in the protocol layer: value conversion, the filter builder, filter parsing.

Value conversion follows realtime-js (SCENARIOS TR-*). One ID per distinct behaviour, in the
order SCENARIOS.md lists them:

* TR-01 ``bool``: ``t`` / ``f`` become ``True`` / ``False``.
* TR-02 ``int2``, ``int4``, ``int8`` and ``oid`` become ints.
* TR-03 ``float4`` and ``float8`` become floats.
* TR-04 ``numeric`` becomes an int when integral, else a float.
* TR-05 non-numeric strings in numeric columns pass through unchanged.
* TR-06 ``json`` and ``jsonb`` text is parsed.
* TR-07 invalid JSON text passes through unchanged.
* TR-08 ``timestamp``: the space between date and time becomes ``T``.
* TR-09 arrays (``_int4``, ``_text``, ...) ``{1,2,3}`` become lists of converted elements.
* TR-10 the empty array ``{}`` becomes ``[]``.
* TR-11 ``null`` stays ``None`` for every type.
* TR-12 the ``skip_types`` option leaves the listed types unconverted.
* TR-13 unknown types pass through unchanged.

PF-01 covers the filter builder :func:`postgres_filter`; :func:`parse_filter` and
:func:`filter_matches` are what the local server uses to route changes (PROTOCOL.md 7.2, 7.3).
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_realtime._postgres_filters import FILTER_OPERATORS, FilterOperator, like_pattern
from trio_realtime.protocol import (
    FilterCondition,
    FilterParseError,
    JSONValue,
    PostgresChange,
    convert_cell,
    convert_change_data,
    filter_matches,
    parse_filter,
    parse_postgres_change,
    postgres_filter,
    postgres_filters,
)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------
# Value conversion (TR-01 .. TR-13).


def test_tr01_bool_t_and_f_become_booleans() -> None:
    """TR-01: ``t``/``f`` are booleans; a value that is already a boolean is kept."""
    assert convert_cell("bool", "t") is True
    assert convert_cell("bool", "f") is False
    assert convert_cell("bool", True) is True
    assert convert_cell("bool", False) is False


@pytest.mark.parametrize("type_name", ["int2", "int4", "int8", "oid"])
def test_tr02_integer_types_become_ints(type_name: str) -> None:
    """TR-02: integer columns sent as text become ints; ints pass through."""
    assert convert_cell(type_name, "42") == 42
    assert type(convert_cell(type_name, "42")) is int
    assert convert_cell(type_name, "-7") == -7
    assert convert_cell(type_name, 5) == 5
    # int8 values beyond 2**53 stay exact.
    assert convert_cell(type_name, "9223372036854775807") == 9223372036854775807


@pytest.mark.parametrize("type_name", ["float4", "float8"])
def test_tr03_float_types_become_floats(type_name: str) -> None:
    """TR-03: float columns sent as text become floats; numbers pass through."""
    assert convert_cell(type_name, "1.5") == 1.5
    assert type(convert_cell(type_name, "1.5")) is float
    assert convert_cell(type_name, "-0.25") == -0.25
    assert convert_cell(type_name, "3") == 3.0
    assert convert_cell(type_name, 2.5) == 2.5


def test_tr04_numeric_becomes_int_or_float() -> None:
    """TR-04: ``numeric`` is an int when integral, else a float."""
    assert convert_cell("numeric", "10") == 10
    assert type(convert_cell("numeric", "10")) is int
    assert convert_cell("numeric", "10.25") == 10.25
    assert type(convert_cell("numeric", "10.25")) is float
    assert convert_cell("numeric", "123456789012345678901234567890") == (
        123456789012345678901234567890
    )


@pytest.mark.parametrize(
    "type_name", ["int2", "int4", "int8", "oid", "float4", "float8", "numeric"]
)
@pytest.mark.parametrize("text", ["abc", "", "12abc", "NaN", "Infinity", "-Infinity", "1.2.3"])
def test_tr05_non_numeric_strings_pass_through(type_name: str, text: str) -> None:
    """TR-05: text that is not a finite number is returned unchanged, never NaN or inf."""
    assert convert_cell(type_name, text) == text


@pytest.mark.parametrize("type_name", ["json", "jsonb"])
def test_tr06_json_and_jsonb_are_parsed(type_name: str) -> None:
    """TR-06: JSON text becomes the decoded value; already-decoded values pass through."""
    assert convert_cell(type_name, '{"a": [1, 2, {"b": null}]}') == {"a": [1, 2, {"b": None}]}
    assert convert_cell(type_name, "[1,2]") == [1, 2]
    assert convert_cell(type_name, '"text"') == "text"
    assert convert_cell(type_name, "3") == 3
    assert convert_cell(type_name, {"already": "decoded"}) == {"already": "decoded"}


@pytest.mark.parametrize("type_name", ["json", "jsonb"])
@pytest.mark.parametrize("text", ["{not json", "", "'single'", "[1,", "nul"])
def test_tr07_invalid_json_passes_through(type_name: str, text: str) -> None:
    """TR-07: text that is not valid JSON is returned unchanged."""
    assert convert_cell(type_name, text) == text


def test_tr08_timestamp_space_becomes_t() -> None:
    """TR-08: ``timestamp`` gets a ``T`` between date and time, and only there."""
    assert convert_cell("timestamp", "2026-08-21 12:00:00.123") == "2026-08-21T12:00:00.123"
    assert convert_cell("timestamp", "2026-08-21T12:00:00") == "2026-08-21T12:00:00"
    # Postgres writes BC dates with a second space; only the date/time separator changes,
    # as realtime-js does (String.replace replaces the first occurrence).
    assert convert_cell("timestamp", "0044-03-15 12:00:00 BC") == "0044-03-15T12:00:00 BC"


def test_tr09_arrays_become_typed_lists() -> None:
    """TR-09: array literals become lists whose elements are converted by the element type."""
    assert convert_cell("_int4", "{1,2,3}") == [1, 2, 3]
    assert convert_cell("_float8", "{1.5,-2}") == [1.5, -2.0]
    assert convert_cell("_bool", "{t,f}") == [True, False]
    assert convert_cell("_text", '{a,"b,c","with \\"quote\\"",NULL,"NULL"}') == [
        "a",
        "b,c",
        'with "quote"',
        None,
        "NULL",
    ]
    assert convert_cell("_int4", "{{1,2},{3,4}}") == [[1, 2], [3, 4]]
    assert convert_cell("_int4", [1, "2"]) == [1, 2]


def test_tr09_quoted_array_elements_are_strings_never_nested_arrays() -> None:
    """TR-09: a quoted element keeps its text: braces or commas inside quotes are data."""
    assert convert_cell("_text", '{"{x}",y}') == ["{x}", "y"]
    assert convert_cell("_jsonb", '{"{\\"a\\": 1}","[1]"}') == [{"a": 1}, [1]]
    assert convert_cell("_text", '{{"a,b",c},{d,"}"}}') == [["a,b", "c"], ["d", "}"]]


def test_tr10_empty_array_becomes_empty_list() -> None:
    """TR-10: ``{}`` is ``[]`` for any element type."""
    assert convert_cell("_int4", "{}") == []
    assert convert_cell("_text", "{}") == []
    assert convert_cell("_jsonb", "{}") == []


@pytest.mark.parametrize(
    "type_name",
    ["bool", "int4", "float8", "numeric", "json", "jsonb", "timestamp", "_int4", "text", "x"],
)
def test_tr11_null_stays_null(type_name: str) -> None:
    """TR-11: ``None`` is ``None`` whatever the column type."""
    assert convert_cell(type_name, None) is None


def test_tr12_skip_types_leaves_those_columns_unconverted() -> None:
    """TR-12: ``skip_types`` names types whose values are handed over as sent."""
    columns: list[JSONValue] = [
        {"name": "id", "type": "int4"},
        {"name": "ok", "type": "bool"},
        {"name": "at", "type": "timestamp"},
    ]
    record = {"id": "1", "ok": "t", "at": "2026-01-01 00:00:00"}
    assert convert_change_data(columns, record) == {
        "id": 1,
        "ok": True,
        "at": "2026-01-01T00:00:00",
    }
    assert convert_change_data(columns, record, skip_types={"int4", "timestamp"}) == {
        "id": "1",
        "ok": True,
        "at": "2026-01-01 00:00:00",
    }
    change = parse_postgres_change(
        {"ids": [1], "data": {"type": "INSERT", "columns": columns, "record": record}},
        skip_types=("bool",),
    )
    assert change is not None
    assert change.new == {"id": 1, "ok": "t", "at": "2026-01-01T00:00:00"}


@pytest.mark.parametrize(
    "type_name", ["text", "varchar", "uuid", "timestamptz", "date", "money", "no_such_type"]
)
def test_tr13_unknown_types_pass_through(type_name: str) -> None:
    """TR-13: types without a conversion (or unknown ones) are handed over unchanged."""
    for value in ("t", "42", "2026-01-01 00:00:00", "{1,2}", '{"a":1}'):
        assert convert_cell(type_name, value) == value
    columns: list[JSONValue] = [{"name": "a", "type": "int4"}]
    # A column with no type entry passes through as well.
    assert convert_change_data(columns, {"a": "1", "b": "2"}) == {"a": 1, "b": "2"}


@PROPERTY_SETTINGS
@given(
    type_name=st.sampled_from(
        [
            "bool",
            "int2",
            "int4",
            "int8",
            "oid",
            "float4",
            "float8",
            "numeric",
            "json",
            "jsonb",
            "timestamp",
            "_int4",
            "_text",
            "_jsonb",
            "_bool",
            "text",
        ]
    ),
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
)
def test_tr05_tr13_conversion_never_raises_and_never_yields_nan(
    type_name: str, value: JSONValue
) -> None:
    """TR-05, TR-07, TR-13: conversion of any text is total; it never produces NaN or inf."""
    result = convert_cell(type_name, value)

    def finite(item: object) -> bool:
        if isinstance(item, float):
            return math.isfinite(item)
        if isinstance(item, list):
            return all(finite(element) for element in item)
        if isinstance(item, dict):
            return all(finite(element) for element in item.values())
        return True

    assert finite(result)


def test_parse_postgres_change_converts_new_and_old() -> None:
    """TR-02, TR-06: the PROTOCOL.md 7.4 example converts; UPDATE fills ``new`` and ``old``."""
    payload: JSONValue = {
        "ids": [38791245],
        "data": {
            "schema": "public",
            "table": "messages",
            "commit_timestamp": "2026-08-21T12:00:00.123Z",
            "type": "UPDATE",
            "errors": None,
            "columns": [
                {"name": "id", "type": "int4"},
                {"name": "body", "type": "text"},
                {"name": "extra", "type": "jsonb"},
            ],
            "record": {"id": "1", "body": "hi", "extra": '{"k":true}'},
            "old_record": {"id": "1"},
        },
    }
    change = parse_postgres_change(payload)
    assert change == PostgresChange(
        schema="public",
        table="messages",
        commit_timestamp="2026-08-21T12:00:00.123Z",
        event_type="UPDATE",
        new={"id": 1, "body": "hi", "extra": {"k": True}},
        old={"id": 1},
        columns=[
            {"name": "id", "type": "int4"},
            {"name": "body", "type": "text"},
            {"name": "extra", "type": "jsonb"},
        ],
        errors=None,
        ids=(38791245,),
    )


def test_parse_postgres_change_rejects_other_shapes() -> None:
    """PG-03 (protocol side): no ``data``, no change; a DELETE has only ``old``."""
    assert parse_postgres_change([]) is None
    assert parse_postgres_change({"ids": [1]}) is None
    change = parse_postgres_change(
        {"ids": [1, "x"], "data": {"type": "DELETE", "old_record": {"id": 3}}}
    )
    assert change is not None
    assert (change.new, change.old, change.ids) == ({}, {"id": 3}, (1,))


def test_tr09_escapes_at_the_end_of_an_array_literal_and_inside_sub_arrays() -> None:
    """TR-09, TR-13: a backslash escapes the next character, also in a sub-array (where it is
    kept for the inner split); one with nothing after it is kept as text. Nothing raises."""
    assert convert_cell("_text", '{"a\\"}') == ['a"']  # the closing quote escaped
    assert convert_cell("_text", '{"a\\}') == ["a\\"]  # a lone backslash at the end
    assert convert_cell("_text", '{{"a\\"b",c}}') == [['a"b', "c"]]
    assert convert_cell("_int4", "{{{1},{2}},{{3}}}") == [[[1], [2]], [[3]]]


def test_tr09_what_is_not_an_array_literal_passes_through() -> None:
    """TR-09, TR-13: text that does not both start with ``{`` and end with ``}`` is kept."""
    for text in ("{1,2", "1,2}", "1}", "{", "}", ""):
        assert convert_cell("_int4", text) == text


def test_tr09_elements_with_one_brace_are_text_not_sub_arrays() -> None:
    """TR-08, TR-09: only an element both opening and closing with a brace is a sub-array; any
    other is converted by the element type, as text."""
    assert convert_cell("_timestamp", "{a b}}") == ["aTb}"]
    assert convert_cell("_timestamp", "{{a b}") == ["{aTb"]


def test_tr13_columns_without_a_string_name_and_type_are_ignored() -> None:
    """TR-13: a column entry without a string name and a string type converts nothing."""
    columns: list[JSONValue] = [
        {"name": "a", "type": 5},
        {"name": 1, "type": "int4"},
        "junk",
        {"name": "b", "type": "int4"},
    ]
    assert convert_change_data(columns, {"a": "1", "b": "2"}) == {"a": "1", "b": 2}


def test_parse_postgres_change_reads_every_field_and_defaults_the_odd_ones() -> None:
    """PG-03, PG-04 (protocol side): errors pass through; ``eventType`` stands in for a missing
    ``type``; ``skip_types`` applies to the old row too; fields of the wrong type or missing
    take empty defaults."""
    columns: list[JSONValue] = [{"name": "id", "type": "int4"}, {"name": "ok", "type": "bool"}]
    change = parse_postgres_change(
        {
            "ids": [4],
            "data": {
                "schema": "s",
                "table": "t",
                "eventType": "DELETE",
                "errors": ["Error 401: Unauthorized"],
                "columns": columns,
                "old_record": {"id": "3", "ok": "t"},
            },
        },
        skip_types=("bool",),
    )
    assert change == PostgresChange(
        schema="s",
        table="t",
        commit_timestamp=None,
        event_type="DELETE",
        new={},
        old={"id": 3, "ok": "t"},
        columns=columns,
        errors=["Error 401: Unauthorized"],
        ids=(4,),
    )
    odd = parse_postgres_change(
        {
            "data": {
                "schema": 1,
                "table": [],
                "commit_timestamp": 5,
                "type": None,
                "columns": "id",
            }
        }
    )
    assert odd == PostgresChange(
        schema="",
        table="",
        commit_timestamp=None,
        event_type="",
        new={},
        old={},
        columns=[],
        errors=None,
        ids=(),
    )


# ---------------------------------------------------------------------------------------------
# Filter builder (PF-01).


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("eq", 5, "room_id=eq.5"),
        ("neq", "x", "room_id=neq.x"),
        ("lt", 10, "room_id=lt.10"),
        ("lte", 1.5, "room_id=lte.1.5"),
        ("gt", -3, "room_id=gt.-3"),
        ("gte", "2026-01-01", "room_id=gte.2026-01-01"),
        ("in", [1, 2, 3], "room_id=in.(1,2,3)"),
        ("in", ("a", "b"), "room_id=in.(a,b)"),
        ("eq", True, "room_id=eq.true"),
        ("eq", None, "room_id=eq.null"),
    ],
)
def test_pf01_operators_produce_col_op_value(
    operator: FilterOperator, value: object, expected: str
) -> None:
    """PF-01: ``eq neq lt lte gt gte in`` produce ``col=op.value``; ``in`` wraps ``(a,b)``."""
    assert postgres_filter("room_id", operator, value) == expected


def test_pf01_values_with_commas_are_quoted() -> None:
    """PF-01: a value with a comma (or parenthesis, or quote) is double-quoted."""
    assert postgres_filter("name", "eq", "a,b") == 'name=eq."a,b"'
    assert postgres_filter("name", "in", ["a,b", "c"]) == 'name=in.("a,b",c)'
    assert postgres_filter("name", "eq", "f(x)") == 'name=eq."f(x)"'
    assert postgres_filter("name", "eq", 'say "hi"') == 'name=eq."say \\"hi\\""'
    assert postgres_filter("name", "eq", "back\\slash,") == 'name=eq."back\\\\slash,"'


def test_pf01_values_the_server_would_misread_are_quoted() -> None:
    """PF-01: blanks, edge spaces, backslashes, braces and ``NULL`` in lists are quoted."""
    assert postgres_filter("c", "eq", "") == 'c=eq.""'
    assert postgres_filter("c", "eq", " x ") == 'c=eq." x "'
    assert postgres_filter("c", "eq", "a\\b") == 'c=eq."a\\\\b"'
    assert postgres_filter("c", "in", ["{a}", "NULL", "null", "x y"]) == (
        'c=in.("{a}","NULL","null",x y)'
    )
    assert postgres_filter("c", "in", [None, 1]) == "c=in.(null,1)"
    assert postgres_filter("c", "eq", "NULL") == "c=eq.NULL"


def test_pf01_negation_and_errors() -> None:
    """PF-01: ``negate`` prefixes ``not.``; bad operators, columns and ``in`` values raise."""
    assert postgres_filter("id", "eq", 5, negate=True) == "id=not.eq.5"
    assert postgres_filter("id", "in", [1], negate=True) == "id=not.in.(1)"
    with pytest.raises(ValueError, match="operator"):
        postgres_filter("id", "fts", "x")  # type: ignore[arg-type]
    for column in ("", "a=b", "a,b"):
        with pytest.raises(ValueError, match="column"):
            postgres_filter(column, "eq", 1)
    with pytest.raises(ValueError, match="iterable"):
        postgres_filter("id", "in", "abc")
    with pytest.raises(ValueError, match="iterable"):
        postgres_filter("id", "in", 5)


def test_pf01_empty_in_item_is_distinct_from_an_empty_list() -> None:
    """PF-01: ``in [""]`` and ``in []`` build different filters that parse back apart."""
    assert postgres_filter("c", "in", []) == "c=in.()"
    assert parse_filter(postgres_filter("c", "in", []))[0].value == ()
    assert parse_filter(postgres_filter("c", "in", [""]))[0].value == ("",)


_COLUMNS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
_OPERATORS: st.SearchStrategy[FilterOperator] = st.sampled_from(
    ["eq", "neq", "lt", "lte", "gt", "gte"]
)
# Mostly the characters the filter syntax gives meaning to, plus anything else.
_VALUES = st.one_of(
    st.text(alphabet=st.one_of(st.sampled_from(list(',()"\\{}=. \tN')), st.characters())),
    st.sampled_from(["", "NULL", "null", "not.eq.1", " x ", '"q"', "a\\"]),
)


@PROPERTY_SETTINGS
@given(column=_COLUMNS, operator=_OPERATORS, value=_VALUES, negate=st.booleans())
def test_pf01_builder_and_parser_round_trip(
    column: str, operator: FilterOperator, value: str, negate: bool
) -> None:
    """PF-01: whatever the value, the server-side parser reads back exactly what was built."""
    text = postgres_filter(column, operator, value, negate=negate)
    assert parse_filter(text) == [FilterCondition(column, operator, value, negate)]


@PROPERTY_SETTINGS
@given(column=_COLUMNS, values=st.lists(_VALUES, max_size=5), negate=st.booleans())
def test_pf01_in_builder_and_parser_round_trip(
    column: str, values: list[str], negate: bool
) -> None:
    """PF-01: ``in`` lists survive quoting, commas, parentheses and blanks."""
    text = postgres_filter(column, "in", values, negate=negate)
    assert parse_filter(text) == [FilterCondition(column, "in", tuple(values), negate)]


@PROPERTY_SETTINGS
@given(
    parts=st.lists(
        st.tuples(_COLUMNS, _OPERATORS, _VALUES, st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_pf01_conditions_joined_by_commas_parse_apart(
    parts: list[tuple[str, FilterOperator, str, bool]],
) -> None:
    """PF-01 / LS-03: several built conditions joined by commas are several conditions."""
    text = ",".join(
        postgres_filter(column, op, value, negate=negate) for column, op, value, negate in parts
    )
    assert parse_filter(text) == [FilterCondition(*part) for part in parts]


# ---------------------------------------------------------------------------------------------
# Filter parsing (PROTOCOL.md 7.2) and its errors (7.3).


def test_parse_filter_examples_from_the_server() -> None:
    """LS-03: the server's doctest examples parse to the same conditions."""
    assert parse_filter("subject=eq.hey") == [FilterCondition("subject", "eq", "hey")]
    assert parse_filter("subject=in.(hidee,ho)") == [
        FilterCondition("subject", "in", ("hidee", "ho"))
    ]
    assert parse_filter("id=gt.0,id=lt.100") == [
        FilterCondition("id", "gt", "0"),
        FilterCondition("id", "lt", "100"),
    ]
    assert parse_filter("id=not.eq.5") == [FilterCondition("id", "eq", "5", negate=True)]
    assert parse_filter('name=eq."a,b",id=in.(1,2)') == [
        FilterCondition("name", "eq", "a,b"),
        FilterCondition("id", "in", ("1", "2")),
    ]


def test_parse_filter_blank_filter_is_no_filter() -> None:
    """LS-03: like the server, an empty or whitespace-only filter has no conditions."""
    assert parse_filter("") == []
    assert parse_filter("   ") == []


def test_parse_filter_trims_segments() -> None:
    """LS-03: whitespace around each comma-separated condition is ignored, as on the server."""
    assert parse_filter(" a=eq.1 , b=gt.2 ") == [
        FilterCondition("a", "eq", "1"),
        FilterCondition("b", "gt", "2"),
    ]


def test_parse_filter_quoting_rules() -> None:
    """LS-03: quotes protect commas and parentheses; backslash escapes inside quotes."""
    assert parse_filter('a=eq."x,(y"') == [FilterCondition("a", "eq", "x,(y")]
    assert parse_filter('a=eq."say \\"hi\\""') == [FilterCondition("a", "eq", 'say "hi"')]
    assert parse_filter('a=in.("x,y",z)') == [FilterCondition("a", "in", ("x,y", "z"))]
    # A quote in the middle of a value does not open a quoted part (server rule: only after
    # '.', '(' or ','), so the comma still separates the conditions.
    assert parse_filter('a=eq.x"y,b=eq.1') == [
        FilterCondition("a", "eq", 'x"y'),
        FilterCondition("b", "eq", "1"),
    ]
    # A stray ')' does not make the depth negative.
    assert parse_filter("a=eq.),b=eq.1") == [
        FilterCondition("a", "eq", ")"),
        FilterCondition("b", "eq", "1"),
    ]
    # A value whose quotes do not close at its end is kept verbatim.
    assert parse_filter('a=eq."x"y"') == [FilterCondition("a", "eq", '"x"y"')]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("undefined", 'Error parsing `filter` params: ["undefined"]'),
        ("subject=fts.hey", 'Error parsing `filter` params: ["fts", "hey"]'),
        ("subject=foo.hey", 'Error parsing `filter` params: ["foo", "hey"]'),
        ("id=not.foo.5", 'Error parsing `filter` params: ["foo", "5"]'),
        ("id=5", 'Error parsing `filter` params: ["5"]'),
        (
            "id=in.1,2",
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses",
        ),
        (
            "id=eq.1,,id=eq.2",
            "Error parsing `filter` params: "
            "filter must not contain empty segments (check for extra commas)",
        ),
        (
            "id=eq.1,",
            "Error parsing `filter` params: "
            "filter must not contain empty segments (check for extra commas)",
        ),
    ],
)
def test_parse_filter_errors_use_the_servers_words(text: str, message: str) -> None:
    """LS-03: PROTOCOL.md 7.3 error strings, with the inspected pieces the server reports."""
    with pytest.raises(FilterParseError) as info:
        parse_filter(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# Filter matching (used by the local server to route changes).

_RECORD: dict[str, JSONValue] = {
    "id": 5,
    "score": 2.5,
    "name": "alice",
    "active": True,
    "gone": None,
    "tags": ["a"],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id=eq.5", True),
        ("id=eq.6", False),
        ("id=neq.6", True),
        ("id=neq.5", False),
        ("id=lt.6", True),
        ("id=lt.5", False),
        ("id=lte.5", True),
        ("id=lte.4", False),
        ("id=gt.4", True),
        ("id=gt.5", False),
        ("id=gte.5", True),
        ("id=gte.6", False),
        ("id=in.(1,5,9)", True),
        ("id=in.(1,9)", False),
        ("id=in.()", False),
        ("id=not.eq.5", False),
        ("id=not.eq.6", True),
        ("id=not.in.(1,9)", True),
        ("id=not.in.(5)", False),
        ("id=gt.4.5", True),
        ("score=gt.2", True),
        ("score=eq.2.5", True),
        ("name=eq.alice", True),
        ("name=lt.bob", True),
        ("name=in.(bob,alice)", True),
        ('name=in.("alice",x)', True),
        ("active=eq.true", True),
        ("active=eq.t", True),
        ("active=eq.false", False),
        ("id=eq.5,name=eq.alice", True),
        ("id=eq.5,name=eq.bob", False),
        ("missing=eq.1", False),
        ("id=eq.abc", False),
        ('tags=eq.["a"]', True),
    ],
)
def test_filter_matches_operators(text: str, expected: bool) -> None:
    """LS-03: ``eq neq lt lte gt gte in`` and ``not.`` against typed record values."""
    assert filter_matches(parse_filter(text), _RECORD) is expected


@pytest.mark.parametrize(
    "text",
    [
        "gone=eq.null",
        "gone=neq.1",
        "gone=not.eq.1",
        "gone=in.(1,2)",
        "gone=not.in.(1,2)",
        "gone=lt.1",
    ],
)
def test_filter_matches_null_never_matches(text: str) -> None:
    """LS-03: as in the server's SQL, a NULL column value never passes a filter, negated or not."""
    assert filter_matches(parse_filter(text), _RECORD) is False


def test_filter_matches_without_conditions() -> None:
    """LS-03: without conditions every record matches."""
    assert filter_matches([], _RECORD) is True
    assert filter_matches(parse_filter(""), {}) is True


# ---------------------------------------------------------------------------------------------
# RS-14: every operator the server accepts, and several conditions in one filter.


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("like", "a%b_", "name=like.a%b_"),
        ("ilike", "%Smith%", "name=ilike.%Smith%"),
        ("match", "^a.*z$", "name=match.^a.*z$"),
        ("imatch", "(a|b)", 'name=imatch."(a|b)"'),
        ("isdistinct", 5, "name=isdistinct.5"),
        ("isdistinct", "a,b", 'name=isdistinct."a,b"'),
        ("is", None, "name=is.null"),
        ("is", True, "name=is.true"),
        ("is", False, "name=is.false"),
        ("is", "unknown", "name=is.unknown"),
        ("is", "null", "name=is.null"),
    ],
)
def test_rs14_builder_knows_every_server_operator(
    operator: FilterOperator, value: object, expected: str
) -> None:
    """RS-14: ``like ilike match imatch is isdistinct`` build as the server parses them."""
    text = postgres_filter("name", operator, value)
    assert text == expected
    (condition,) = parse_filter(text)
    assert condition.operator == operator
    assert FILTER_OPERATORS == (
        "eq",
        "neq",
        "lt",
        "lte",
        "gt",
        "gte",
        "in",
        "like",
        "ilike",
        "is",
        "match",
        "imatch",
        "isdistinct",
    )


def test_rs14_builder_refuses_values_the_operator_cannot_take() -> None:
    """RS-14: ``is`` takes only null/true/false/unknown; pattern operators take strings."""
    for bad in ("maybe", "NULL", 1):
        with pytest.raises(ValueError, match="an 'is' filter takes"):
            postgres_filter("c", "is", bad)
    for operator in ("like", "ilike", "match", "imatch"):
        with pytest.raises(ValueError, match="string pattern"):
            postgres_filter("c", operator, 5)
    assert postgres_filter("c", "is", None, negate=True) == "c=not.is.null"


def test_rs14_postgres_filters_joins_conditions_that_all_must_hold() -> None:
    """RS-14: several conditions in one filter, comma-separated; the server ANDs them."""
    text = postgres_filters(
        postgres_filter("room", "eq", 5),
        postgres_filter("body", "ilike", "%hi%"),
        postgres_filter("deleted_at", "is", None),
    )
    assert text == "room=eq.5,body=ilike.%hi%,deleted_at=is.null"
    conditions = parse_filter(text)
    assert filter_matches(conditions, {"room": 5, "body": "Oh HI there", "deleted_at": None})
    assert not filter_matches(conditions, {"room": 5, "body": "bye", "deleted_at": None})
    assert not filter_matches(conditions, {"room": 5, "body": "hi", "deleted_at": "2026-01-01"})
    with pytest.raises(ValueError, match="at least one"):
        postgres_filters()
    with pytest.raises(FilterParseError, match=re.escape('Error parsing `filter` params: ["x"]')):
        postgres_filters("id=eq.1", "x")
    with pytest.raises(ValueError, match="not a filter"):
        postgres_filters("id=eq.1", "")


_NEW_RECORD: dict[str, JSONValue] = {
    "name": "Alice_Smith",
    "body": "line one\nline two",
    "n": 42,
    "active": True,
    "off": False,
    "gone": None,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name=like.Alice%", True),
        ("name=like.alice%", False),
        ("name=ilike.alice%", True),
        ("name=like.Alice_Smith", True),
        ("name=like.Alice\\_Smith", True),
        ("name=like.Alice\\_Smit", False),
        ("name=like.%Smith", True),
        ("name=like.Smith", False),
        ("body=like.line%two", True),
        ("n=like.4%", True),
        ("name=not.like.Bob%", True),
        ("name=match.Sm.th", True),
        ("name=match.^Smith", False),
        ("name=imatch.^alice", True),
        ("name=match.^alice", False),
        ("name=not.imatch.^alice", False),
        ("active=is.true", True),
        ("active=is.false", False),
        ("off=is.false", True),
        ("active=not.is.true", False),
        ("gone=is.null", True),
        ("gone=is.unknown", True),
        ("gone=not.is.null", False),
        ("name=is.null", False),
        ("name=not.is.null", True),
        ("n=isdistinct.41", True),
        ("n=isdistinct.42", False),
        ("n=not.isdistinct.42", True),
        ("gone=isdistinct.1", True),
        ("gone=not.isdistinct.1", False),
        ("gone=like.%", False),
        ("gone=not.like.x", False),
        ("gone=match..*", False),
        ("n=gt.40,n=lt.50,name=ilike.a%", True),
        ("n=gt.40,n=lt.42", False),
    ],
)
def test_rs14_every_operator_matches_as_the_servers_sql(text: str, expected: bool) -> None:
    """RS-14: like/ilike (``%``, ``_``, ``\\`` escapes), match/imatch (search, not anchored),
    is (NULL-aware), isdistinct (NULL-aware), ``not.``, and AND-ed conditions; a NULL value
    fails every other operator, negated or not."""
    assert filter_matches(parse_filter(text), _NEW_RECORD) is expected


_ALL_STRING_OPERATORS: st.SearchStrategy[FilterOperator] = st.sampled_from(
    ["eq", "neq", "lt", "lte", "gt", "gte", "like", "ilike", "match", "imatch", "isdistinct"]
)


@PROPERTY_SETTINGS
@given(column=_COLUMNS, operator=_ALL_STRING_OPERATORS, value=_VALUES, negate=st.booleans())
def test_rs14_builder_and_parser_round_trip_for_every_operator(
    column: str, operator: FilterOperator, value: str, negate: bool
) -> None:
    """RS-14: for every operator taking a value, the parser reads back exactly what was built."""
    text = postgres_filter(column, operator, value, negate=negate)
    assert parse_filter(text) == [FilterCondition(column, operator, value, negate)]


# ---------------------------------------------------------------------------------------------
# What mutation testing found untested in the filters.


def test_pf01_builder_values_and_refusals_exactly() -> None:
    """PF-01, RS-14: ``False`` is written ``false``; any column without ``=`` or ``,`` is fine;
    each refusal has its own message."""
    assert postgres_filter("c", "eq", False) == "c=eq.false"
    assert postgres_filter("c", "eq", True) == "c=eq.true"
    assert postgres_filter("X", "eq", 1) == "X=eq.1"
    operators = ", ".join(FILTER_OPERATORS)
    with pytest.raises(
        ValueError, match=f"^filter operator must be one of {re.escape(operators)}$"
    ):
        postgres_filter("id", "fts", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^an 'in' filter needs an iterable of values$"):
        postgres_filter("id", "in", 5)
    is_refusal = "an 'is' filter takes None, True, False, 'null', 'true', 'false' or 'unknown'"
    with pytest.raises(ValueError, match=f"^{re.escape(is_refusal)}$"):
        postgres_filter("id", "is", "maybe")
    with pytest.raises(ValueError, match=r"^postgres_filters needs at least one filter$"):
        postgres_filters()


@pytest.mark.parametrize(
    ("text", "conditions"),
    [
        # A backslash escapes the next character in a quoted value, a comma too.
        (
            'c=eq."a\\"b,c",d=eq.1',
            [FilterCondition("c", "eq", 'a"b,c'), FilterCondition("d", "eq", "1")],
        ),
        ('c=eq."a\\,', [FilterCondition("c", "eq", '"a\\,')]),
        # Quotes that do not close at the value's end keep it verbatim.
        ('c=eq."a\\"', [FilterCondition("c", "eq", '"a\\"')]),
        ('c=eq."a\\', [FilterCondition("c", "eq", '"a\\')]),
        ('c=eq."ab', [FilterCondition("c", "eq", '"ab')]),
        # Parentheses nest; a condition after an ``in`` list is split off.
        (
            "c=in.((a),b),d=eq.1",
            [FilterCondition("c", "in", ("(a)", "b")), FilterCondition("d", "eq", "1")],
        ),
        ("c=in.(a),d=eq.1", [FilterCondition("c", "in", ("a",)), FilterCondition("d", "eq", "1")]),
    ],
)
def test_parse_filter_escapes_unclosed_quotes_and_nesting(
    text: str, conditions: list[FilterCondition]
) -> None:
    """LS-03, PF-01: escapes, unclosed quotes and nested parentheses split as the server's do."""
    assert parse_filter(text) == conditions


@pytest.mark.parametrize("text", ["c=in.(a", "c=in.a)"])
def test_parse_filter_in_needs_both_parentheses(text: str) -> None:
    """LS-03: an ``in`` value must open and close with a parenthesis."""
    message = "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"
    with pytest.raises(FilterParseError, match=f"^{re.escape(message)}$"):
        parse_filter(text)


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("c=eq.false", False, True),
        ("c=eq.f", False, True),
        ("c=eq.FALSE", False, True),
        ("c=eq.false", True, False),
        ("c=eq.x", False, False),
        ("c=neq.x", False, False),
        ("c=eq.1e3", 1000, False),  # not an integer literal: no comparison
        ("c=eq.9007199254740993", 9007199254740993, True),  # compared as integers, exactly
        ("c=eq.9007199254740992", 9007199254740993, False),
        ("c=like.true", True, True),
        ("c=like.false", False, True),
        ("c=like.TRUE", True, False),
        ("c=is.maybe", None, False),  # refused at subscription: never matches
        ("c=not.is.maybe", None, False),
    ],
)
def test_rs14_booleans_numbers_and_refused_keywords_match_as_the_server(
    text: str, value: JSONValue, expected: bool
) -> None:
    """RS-14: booleans compare with ``true``/``t``/``false``/``f`` in any case, integers exactly
    as integers, booleans as the text ``true``/``false`` in patterns."""
    assert filter_matches(parse_filter(text), {"c": value}) is expected


def test_rs14_an_in_condition_with_a_single_value() -> None:
    """RS-14: an ``in`` condition built by hand with one string value means that value."""
    condition = FilterCondition("c", "in", "ab")
    assert filter_matches([condition], {"c": "ab"}) is True
    assert filter_matches([condition], {"c": "a"}) is False


def test_rs14_like_patterns_are_case_sensitive_with_escapes_and_one_character_wildcards() -> None:
    """RS-14: ``like`` is case-sensitive by default; ``_`` is one character; a backslash escapes
    the next character, and a trailing one stands for itself."""
    assert like_pattern("A").fullmatch("a") is None
    assert like_pattern("A", ignore_case=True).fullmatch("a") is not None
    assert like_pattern("a_c").fullmatch("abc") is not None
    assert like_pattern("a_c").fullmatch("ac") is None
    assert like_pattern("a\\%").fullmatch("a%") is not None
    assert like_pattern("a\\%").fullmatch("a\\x") is None
    assert like_pattern("a\\").fullmatch("a\\") is not None
