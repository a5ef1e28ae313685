"""Named kinds of bad messages, each with the dead-letter reason the decoder must give.

Reusable: the unit tests decode them directly, the fault tests produce them to Kafka
next to good records. Everything is built for a given ``InputSpec`` (its shape and class
count), so the corpus fits any detector; ``spec.size`` must be at least 2.

Each ``Poison`` holds for its ``fmt`` and for ``RecordFormat.AUTO`` alike. ``good_record``
and ``good_v2_record`` build the valid neighbours.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.stream.formats import skeleton
from monitor.stream.records import InputSpec, Reason, RecordFormat

F = RecordFormat
R = Reason
Headers = list[tuple[str, bytes]] | None


@dataclass(frozen=True)
class Poison:
    """One kind of bad message and what the decoder must say about it."""

    name: str
    value: bytes | None
    reason: Reason
    fmt: RecordFormat = RecordFormat.JSON
    headers: Headers = None


def good_instance(spec: InputSpec, seed: int = 0) -> np.ndarray:
    """A float32 instance of the spec's shape with varied, exactly representable values."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 3.0, size=spec.shape).astype(np.float32)


def good_output(spec: InputSpec, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed + 1).random(spec.n_classes).astype(np.float32) + 0.01
    return (p / p.sum()).astype(np.float32)


def good_record(spec: InputSpec, seed: int = 0, output: bool = False, **extra: Any) -> bytes:
    """A valid ``json`` record; values written with their exact float32 repr."""
    body: dict[str, Any] = {"id": f"good-{seed}", "instance": good_instance(spec, seed).tolist()}
    if output:
        body["output"] = good_output(spec, seed).tolist()
    body.update(extra)
    return json.dumps(body).encode()


def good_v2_record(spec: InputSpec, seed: int = 0, rows: int = 1) -> bytes:
    x = np.stack([good_instance(spec, seed + r) for r in range(rows)])
    body = {
        "id": f"good-v2-{seed}",
        "inputs": [
            {
                "name": "input-0",
                "shape": [rows, *spec.shape],
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ],
    }
    return json.dumps(body).encode()


def _dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def _ragged_same_count(nested: list[Any]) -> list[Any]:
    """Same numbers, same top-level length, wrong nesting (only a skeleton check sees it)."""
    out = copy.deepcopy(nested)
    first, last = out, out
    while isinstance(first[0], list):
        first, last = first[0], last[-1]
    if first is last:  # one innermost list: [a, b, c] -> [[a, b], [], c]
        first[:] = [[first[0], first[1]], [], *first[2:]]
    else:  # move a number from the last innermost list to the first
        first.append(last.pop())
    return out


def _replace_first_number(nested: list[Any], value: Any) -> list[Any]:
    out = copy.deepcopy(nested)
    inner = out
    while isinstance(inner[0], list):
        inner = inner[0]
    inner[0] = value
    return out


def _with_raw_number(spec: InputSpec, literal: str, where: str = "instance") -> bytes:
    """A record whose first instance (or output) number is replaced by raw text."""
    marker = 123456.5
    inst = good_instance(spec).tolist()
    body: dict[str, Any] = {"id": "p", "instance": inst}
    if where == "instance":
        body["instance"] = _replace_first_number(inst, marker)
    else:
        out = good_output(spec).tolist()
        out[0] = marker
        body["output"] = out
    return _dumps(body).replace(b"123456.5", literal.encode(), 1)


def _v2(spec: InputSpec, rows: int = 1, **tensor: Any) -> dict[str, Any]:
    body = json.loads(good_v2_record(spec, rows=rows))
    body["inputs"][0].update(tensor)
    return body


def poison_corpus(spec: InputSpec) -> list[Poison]:
    """Every kind of bad message, built for ``spec``."""
    if spec.size < 2:
        raise ValueError("the poison corpus needs instances of at least 2 numbers")
    inst = good_instance(spec).tolist()
    flat = good_instance(spec).ravel().tolist()
    out = good_output(spec).tolist()
    good = good_record(spec)
    limit = spec.max_message_bytes
    huge = max(min(200_000, (limit - 64) // 2), spec.size + 1)
    d = _dumps
    p = Poison
    corpus = [
        # -- size and emptiness
        p("empty_value", b"", R.EMPTY),
        p("null_value_tombstone", None, R.EMPTY),
        p("whitespace_only", b" \n\t\r ", R.EMPTY),
        p("oversized_valid_json", good_record(spec, pad="x" * limit), R.TOO_LARGE),
        p("oversized_garbage", b"\xff" * (limit + 1), R.TOO_LARGE),
        # -- encoding
        p("invalid_utf8_leading_byte", b"\xff" + good, R.NOT_UTF8),
        p("invalid_utf8_in_string", good[:-1] + b', "note": "\xc3\x28"}', R.NOT_UTF8),
        p("overlong_utf8", good[:-1] + b', "note": "\xc0\xaf"}', R.NOT_UTF8),
        p("utf8_encoded_surrogate", good[:-1] + b', "note": "\xed\xa0\x80"}', R.NOT_UTF8),
        p("utf16_encoded", good.decode().encode("utf-16"), R.NOT_UTF8),
        p("latin1_text", good[:-1] + ', "note": "café"}'.encode("latin-1"), R.NOT_UTF8),
        p("truncated_utf8_sequence", good[:-1] + b', "note": "\xe2\x82"}', R.NOT_UTF8),
        # -- syntax
        p("truncated_json", good[: len(good) // 2], R.INVALID_JSON),
        p("truncated_after_brace", b"{", R.INVALID_JSON),
        p("unclosed_string", b'{"instance": [1, 2], "id": "abc', R.INVALID_JSON),
        p("trailing_garbage", good + b" xyz", R.INVALID_JSON),
        p("two_documents", good + good, R.INVALID_JSON),
        p("trailing_comma", good[:-2] + b",]}", R.INVALID_JSON),
        p("single_quotes", good.replace(b'"', b"'"), R.INVALID_JSON),
        p("unquoted_keys", good.replace(b'"instance"', b"instance"), R.INVALID_JSON),
        p("comment", b"// a comment\n" + good, R.INVALID_JSON),
        p("leading_zero_number", _with_raw_number(spec, "01"), R.INVALID_JSON),
        p("plus_sign_number", _with_raw_number(spec, "+1"), R.INVALID_JSON),
        p("hex_number", _with_raw_number(spec, "0x1F"), R.INVALID_JSON),
        p("bare_dot_number", _with_raw_number(spec, ".5"), R.INVALID_JSON),
        p("lowercase_nan", _with_raw_number(spec, "nan"), R.INVALID_JSON),
        p("lone_surrogate_escape", good[:-1] + b', "note": "\\ud800"}', R.INVALID_JSON),
        p("raw_control_character", good[:-1] + b', "note": "a\x01b"}', R.INVALID_JSON),
        p("nul_byte_after_document", good + b"\x00", R.INVALID_JSON),
        p("plain_text", b"hello world", R.INVALID_JSON),
        p("binary_garbage", bytes(range(0, 32)), R.INVALID_JSON),
        p("deep_nesting_beyond_limit", b"[" * 5000 + b"]" * 5000, R.INVALID_JSON),
        p(
            "deep_nesting_in_context",
            good[:-1] + b', "ctx": ' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}",
            R.INVALID_JSON,
        ),
        # -- not finite
        p("nan_literal", _with_raw_number(spec, "NaN"), R.NON_FINITE),
        p("infinity_literal", _with_raw_number(spec, "Infinity"), R.NON_FINITE),
        p("negative_infinity_literal", _with_raw_number(spec, "-Infinity"), R.NON_FINITE),
        p("huge_exponent", _with_raw_number(spec, "1e999"), R.NON_FINITE),
        p("huge_negative_exponent", _with_raw_number(spec, "-1e999"), R.NON_FINITE),
        p("beyond_float32_range", _with_raw_number(spec, "1e39"), R.NON_FINITE),
        p("nan_in_output", _with_raw_number(spec, "NaN", "output"), R.NON_FINITE),
        p("beyond_float32_in_output", _with_raw_number(spec, "-4e38", "output"), R.NON_FINITE),
        p("nan_in_context", good[:-1] + b', "temperature": NaN}', R.NON_FINITE),
        # -- top-level shape of the document
        p("top_level_array", d([inst]), R.SCHEMA),
        p("top_level_bare_instance", d(inst), R.SCHEMA),
        p("top_level_number", b"42", R.SCHEMA),
        p("top_level_string", b'"instance"', R.SCHEMA),
        p("top_level_null", b"null", R.SCHEMA),
        p("top_level_true", b"true", R.SCHEMA),
        p("empty_object", b"{}", R.SCHEMA),
        p("missing_instance", d({"id": "x", "output": out, "user": "u"}), R.SCHEMA),
        p("misspelled_instance", d({"id": "x", "instanse": inst}), R.SCHEMA),
        p("instance_null", d({"instance": None}), R.SCHEMA),
        p("instance_object", d({"instance": {"values": flat}}), R.SCHEMA),
        p("instance_string", d({"instance": json.dumps(inst)}), R.SCHEMA),
        p("instance_number", d({"instance": 1.5}), R.SCHEMA),
        p("instance_bool", d({"instance": True}), R.SCHEMA),
        p("output_object", d({"instance": inst, "output": {"p": out}}), R.SCHEMA),
        p("output_string", d({"instance": inst, "output": "0.1,0.9"}), R.SCHEMA),
        # -- duplicate keys (parsers disagree on which wins)
        p("duplicate_instance_key", good[:-1] + b', "instance": ' + d(inst) + b"}", R.SCHEMA),
        p("duplicate_context_key", b'{"id": "a", "id": "b", ' + good[1:], R.SCHEMA),
        p(
            "duplicate_key_via_escape",
            good[:-1] + b', "\\u0069nstance": ' + d(inst) + b"}",
            R.SCHEMA,
        ),
        # -- shape
        p("instance_empty", d({"instance": []}), R.SHAPE),
        p("instance_one_short", d({"instance": _drop_last(inst)}), R.SHAPE),
        p("instance_one_long", d({"instance": _add_one(inst)}), R.SHAPE),
        p("instance_extra_nesting", d({"instance": [inst, inst]}), R.SHAPE),
        p("instance_flattened_or_wrapped", d({"instance": _other_nesting(spec, flat)}), R.SHAPE),
        p("ragged_same_count", d({"instance": _ragged_same_count(inst)}), R.SHAPE),
        p(
            "ragged_same_count_with_context_arrays",
            d({"instance": _ragged_same_count(inst), "tags": ["a", [1]]}),
            R.SHAPE,
        ),
        p(
            "ragged_with_skeleton_in_string",
            d({"instance": _ragged_same_count(inst), "note": skeleton(spec.shape).decode()}),
            R.SHAPE,
        ),
        p(
            "ragged_next_to_escaped_strings",
            d({"note": 'say "hi" \\ bye', "instance": _ragged_same_count(inst)}),
            R.SHAPE,
        ),
        p(
            "ragged_with_instance_also_a_value",
            d({"tag": "instance", "instance": _ragged_same_count(inst), "output": out}),
            R.SHAPE,
        ),
        p(
            "ragged_with_instance_key_nested_deeper",
            d({"instance": _ragged_same_count(inst), "ctx": {"instance": inst}}),
            R.SHAPE,
        ),
        p("huge_array", b'{"instance": [' + b"0," * huge + b"0]}", R.SHAPE),
        p("deep_nesting_within_limit", b'{"instance": ' + b"[" * 500 + b"]" * 500 + b"}", R.SHAPE),
        p("output_wrong_length", d({"instance": inst, "output": [*out, 0.0]}), R.SHAPE),
        p("output_nested", d({"instance": inst, "output": [out]}), R.SHAPE),
        p("output_empty", d({"instance": inst, "output": []}), R.SHAPE),
        # -- element types
        p("strings_for_numbers", d({"instance": _map(inst, str)}), R.DTYPE),
        p("one_string_among_numbers", d({"instance": _replace_first_number(inst, "0.5")}), R.DTYPE),
        p("nan_as_string", d({"instance": _replace_first_number(inst, "NaN")}), R.DTYPE),
        p("bools_for_numbers", d({"instance": _map(inst, lambda v: v > 0)}), R.DTYPE),
        p("one_bool_among_numbers", d({"instance": _replace_first_number(inst, True)}), R.DTYPE),
        p("null_among_numbers", d({"instance": _replace_first_number(inst, None)}), R.DTYPE),
        p("nulls_for_numbers", d({"instance": _map(inst, lambda v: None)}), R.DTYPE),
        p("object_among_numbers", d({"instance": _replace_first_number(inst, {"v": 1})}), R.DTYPE),
        p("output_strings", d({"instance": inst, "output": [str(v) for v in out]}), R.DTYPE),
        p("integer_beyond_64_bits", _with_raw_number(spec, "1" + "0" * 30), R.DTYPE),
        # -- Open Inference Protocol (v2)
        p("v2_bytes_datatype", d(_v2(spec, datatype="BYTES")), R.DTYPE, F.V2),
        p("v2_bool_datatype", d(_v2(spec, datatype="BOOL")), R.DTYPE, F.V2),
        p("v2_unknown_datatype", d(_v2(spec, datatype="FP99")), R.DTYPE, F.V2),
        p("v2_datatype_not_string", d(_v2(spec, datatype=32)), R.SCHEMA, F.V2),
        p("v2_string_data", d(_v2(spec, data=[str(v) for v in flat])), R.DTYPE, F.V2),
        p("v2_data_shorter_than_shape", d(_v2(spec, data=flat[:-1])), R.SHAPE, F.V2),
        p(
            "v2_row_shape_mismatch",
            d(_v2(spec, shape=[1, spec.size + 1], data=[*flat, 0.0])),
            R.SHAPE,
            F.V2,
        ),
        p("v2_zero_rows", d(_v2(spec, shape=[0, *spec.shape], data=[])), R.SHAPE, F.V2),
        p("v2_negative_dimension", d(_v2(spec, shape=[-1, *spec.shape])), R.SHAPE, F.V2),
        p("v2_shape_of_strings", d(_v2(spec, shape=["1", *map(str, spec.shape)])), R.SCHEMA, F.V2),
        p("v2_ragged_nested_data", d(_v2(spec, data=[_ragged_same_count(inst)])), R.SHAPE, F.V2),
        p("v2_missing_data", d(_v2_without(spec, "data")), R.SCHEMA, F.V2),
        p("v2_missing_shape", d(_v2_without(spec, "shape")), R.SCHEMA, F.V2),
        p("v2_missing_datatype", d(_v2_without(spec, "datatype")), R.SCHEMA, F.V2),
        p("v2_inputs_object", d({"inputs": {"name": "x", "data": flat}}), R.SCHEMA, F.V2),
        p("v2_inputs_empty", d({"inputs": []}), R.SCHEMA, F.V2),
        p("v2_tensor_not_object", d({"inputs": [flat]}), R.SCHEMA, F.V2),
        p("v2_two_ambiguous_inputs", d(_v2_two_inputs(spec)), R.SCHEMA, F.V2),
        p("v2_nan_literal", d(_v2(spec, data=[float("nan"), *flat[1:]])), R.NON_FINITE, F.V2),
        p("v2_second_row_beyond_float32", d(_v2_second_row(spec, 1e39)), R.NON_FINITE, F.V2),
        p("v2_duplicate_key_in_tensor", _v2_duplicate_key(spec), R.SCHEMA, F.V2),
        # -- declared sizes: checked against the data present before anything is built
        p(
            "v2_declared_rows_bomb",
            d(_v2(spec, shape=[10_000_000, *spec.shape])),
            R.TOO_MANY_ROWS,
            F.V2,
        ),
        p(
            "v2_declared_shape_beyond_data",
            d(_v2(spec, shape=[spec.max_rows, *spec.shape])),
            R.SHAPE,
            F.V2,
        ),
        # -- V1 and Seldon
        p("v1_instances_object", d({"instances": {"x": flat}}), R.SCHEMA, F.V1),
        p("v1_instances_empty", d({"instances": []}), R.SHAPE, F.V1),
        p("v1_b64_instances", d({"instances": [{"b64": "AAAA"}]}), R.DTYPE, F.V1),
        p("v1_ragged_rows", d({"instances": [inst, _drop_last(inst)]}), R.SHAPE, F.V1),
        p(
            "v1_rows_beyond_the_cap",
            d({"instances": [0] * (spec.max_rows + 1)}),
            R.TOO_MANY_ROWS,
            F.V1,
        ),
        p(
            "seldon_declared_rows_bomb",
            d({"data": {"tensor": {"shape": [10_000_000, *spec.shape], "values": flat}}}),
            R.TOO_MANY_ROWS,
            F.SELDON,
        ),
        p("seldon_str_data", d({"data": {"strData": "hello"}}), R.SCHEMA, F.SELDON),
        p("seldon_data_array", d({"data": [inst]}), R.SCHEMA, F.SELDON),
        p("seldon_wrong_row_shape", d({"data": {"ndarray": [_add_one(inst)]}}), R.SHAPE, F.SELDON),
        p(
            "seldon_tensor_size_mismatch",
            d({"data": {"tensor": {"shape": [1, *spec.shape], "values": flat[:-1]}}}),
            R.SHAPE,
            F.SELDON,
        ),
    ]
    if spec.n_classes >= 2:
        ragged_out = d({"instance": inst, "output": _ragged_same_count(out)})
        corpus.append(p("ragged_output_same_count", ragged_out, R.SHAPE))
    from protobuf_corpus import protobuf_poisons  # it builds on this module

    corpus += protobuf_poisons(spec)
    names = [c.name for c in corpus]
    assert len(names) == len(set(names)), "poison names must be unique"
    return corpus


def for_format(corpus: list[Poison], fmt: RecordFormat) -> list[Poison]:
    """The kinds whose expected reason holds when the decoder runs in ``fmt``."""
    return [case for case in corpus if holds_in(case, fmt)]


def holds_in(case: Poison, fmt: RecordFormat) -> bool:
    """Every kind holds in its own format and in ``auto``; a json kind also holds in the
    other formats when its reason is found before the format matters (size, encoding,
    syntax, text that isn't a finite JSON number) or is a missing field (``schema``)."""
    if fmt is RecordFormat.AUTO or case.fmt is fmt:
        return True
    if case.fmt is not RecordFormat.JSON:
        return False
    if fmt is RecordFormat.V2_PROTOBUF:  # no JSON is read: only size and no value at all
        return case.reason is R.TOO_LARGE or not case.value
    early = (R.EMPTY, R.TOO_LARGE, R.NOT_UTF8, R.INVALID_JSON, R.SCHEMA)
    return case.reason in early or case.name in _PARSE_LEVEL


_PARSE_LEVEL = frozenset(
    {"nan_literal", "infinity_literal", "negative_infinity_literal", "huge_exponent"}
    | {"huge_negative_exponent", "nan_in_output", "nan_in_context", "integer_beyond_64_bits"}
)


def _map(nested: Any, fn: Any) -> Any:
    return [_map(v, fn) for v in nested] if isinstance(nested, list) else fn(nested)


def _drop_last(nested: list[Any]) -> list[Any]:
    return nested[:-1]


def _add_one(nested: list[Any]) -> list[Any]:
    return [*nested, copy.deepcopy(nested[-1])]


def _other_nesting(spec: InputSpec, flat: list[float]) -> list[Any]:
    """The numbers, nested differently: flat for nested shapes, one level deeper for flat."""
    if len(spec.shape) > 1:
        return flat
    return [flat[i : i + 1] for i in range(len(flat))]


def _v2_without(spec: InputSpec, field: str) -> dict[str, Any]:
    body = _v2(spec)
    del body["inputs"][0][field]
    return body


def _v2_two_inputs(spec: InputSpec) -> dict[str, Any]:
    body = _v2(spec)
    body["inputs"].append(dict(body["inputs"][0], name="input-1"))
    return body


def _v2_second_row(spec: InputSpec, value: float) -> dict[str, Any]:
    body = json.loads(good_v2_record(spec, rows=2))
    body["inputs"][0]["data"][spec.size] = value
    return body


def _v2_duplicate_key(spec: InputSpec) -> bytes:
    raw = good_v2_record(spec)
    return raw.replace(b'"datatype": "FP32"', b'"datatype": "FP32", "datatype": "BYTES"', 1)
