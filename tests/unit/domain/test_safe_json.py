import json

import pytest

from agent.domain.safe_json import JsonInputError, format_path, loads_bounded


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]", inner: bytes = b"") -> bytes:
    return opener * depth + inner + closer * depth


def test_valid_json_parses_as_json_loads_does():
    raw = '{"a": [1, 2.5, "x", true, null, {"é": "😀"}], "b": -0}'.encode()
    assert loads_bounded(raw) == json.loads(raw)


def test_surrogate_pairs_are_one_character_and_fine():
    assert loads_bounded(b'"\\ud83d\\ude00"') == "😀"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"labels": {"team": "\\ud800"}}',
            r"^labels\.team: string is not valid Unicode text \(lone surrogate U\+D800",
        ),
        (b'[1, {"k": "ok\\udfff"}]', r"^1\.k: string is not valid Unicode text \(lone surrogate U\+DFFF at char"),
        (b'{"labels": {"a\\ud800": "v"}}', r"^labels: key 'a\\ud800' is not valid Unicode text"),
        (b'"\\udc00\\ud800"', r"^body: string is not valid Unicode text"),  # a reversed pair is two lone ones
    ],
)
def test_lone_surrogates_anywhere_are_refused_naming_the_path(raw, expected):
    with pytest.raises(JsonInputError, match=expected) as err:
        loads_bounded(raw)
    str(err.value).encode()  # the message itself is valid text (safe to log and to send)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff{}", "body is not UTF-8: byte 0xff at line 1 column 1 (offset 0)"),
        (b'{\n  "a": "\xc3"}', "body is not UTF-8: byte 0xc3 at line 2 column 9 (offset 10)"),
        (b'["\xed\xa0\x80"]', "body is not UTF-8: byte 0xed"),  # an encoded surrogate is not UTF-8 either
    ],
)
def test_undecodable_bytes_are_refused_saying_where(raw, expected):
    with pytest.raises(JsonInputError) as err:
        loads_bounded(raw)
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a" 1}', "body is not valid JSON: Expecting ':' delimiter at line 1 column 6"),
        (
            b'{\n"a": 1,\n}',
            "body is not valid JSON: Expecting property name enclosed in double quotes at line 3 column 1",
        ),
        (b"", "body is empty"),
        (b" \n\t", "body is empty"),
        (b"[NaN]", "body is not valid JSON: NaN is not a JSON number"),
        (b'{"x": -Infinity}', "body is not valid JSON: -Infinity is not a JSON number"),
        (b"[1e999]", "body is not valid JSON: the number 1e999 is out of range"),
        (b"9" * 5000, "body is not valid JSON: an integer with 5000 digits is too long"),
    ],
)
def test_invalid_json_is_refused_with_a_clear_message(raw, expected):
    with pytest.raises(JsonInputError) as err:
        loads_bounded(raw)
    assert str(err.value) == expected


def test_nesting_up_to_max_depth_parses_and_one_more_level_is_refused_with_its_path():
    assert loads_bounded(_nested(4), max_depth=4) == [[[[]]]]
    with pytest.raises(JsonInputError, match=r"^0\.0\.0\.0: nested deeper than 4 levels"):
        loads_bounded(_nested(5), max_depth=4)
    with pytest.raises(JsonInputError, match=r"^a\.a: nested deeper than 2 levels"):
        loads_bounded(b'{"a": {"a": {}}}', max_depth=2)


@pytest.mark.parametrize("depth", [33, 500, 10_000, 1_000_000])
@pytest.mark.parametrize(("opener", "closer", "inner"), [(b"[", b"]", b""), (b'{"a":', b"}", b"1")])
def test_deep_nesting_is_refused_never_a_recursion_error(depth, opener, closer, inner):
    with pytest.raises(JsonInputError, match=r"nested (too deeply|deeper than 32 levels)"):
        loads_bounded(_nested(depth, opener, closer, inner))


def test_max_bytes_is_checked_before_parsing():
    assert loads_bounded(b"[1]", max_bytes=3) == [1]
    with pytest.raises(JsonInputError, match=r"^body is 4 bytes, more than the limit of 3$"):
        loads_bounded(b"[11]", max_bytes=3)


def test_the_one_error_type_is_a_value_error():
    assert issubclass(JsonInputError, ValueError)


def test_paths_are_escaped_and_shortened_for_logs():
    assert format_path([]) == "body"
    assert format_path(["alerts", 0, "labels", "team"]) == "alerts.0.labels.team"
    assert format_path(["labels", "a.b"]) == "labels.'a.b'"
    assert format_path(["labels", "\ud800\n"]) == r"labels.'\ud800\n'"
    assert len(format_path(["k" * 10_000])) == 64
    assert format_path(list(range(40))) == "0.1.2.3.4.5.(32 more).38.39"
