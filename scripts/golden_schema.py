#!/usr/bin/env python3
"""Golden data for the JSON Schema front end (tests/server/test_json_schema.cc).

For each schema: JSON texts labelled by Python (json.loads, no NaN/Infinity, then
jsonschema with the format checker). "canonical" texts are valid instances written the
way the grammar promises to cover (keys in schema order, ", " or "," and ": " or ":",
or indent=2); the test requires the grammar to accept those, and never to accept a text
Python rejects. Mutations and other values test the second half. Deterministic.

    .venv/bin/python scripts/golden_schema.py > tests/server/data/schema_golden.json
"""
import json
import random

import jsonschema

S = []  # (name, schema, valid instances in schema order, other values)

S.append(("person", {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age"],
}, [{"name": "Ada", "age": 36}, {"name": "", "age": 0, "tags": []},
    {"name": "Al \"x\" \\ é", "age": 150, "email": "al@b.co", "tags": ["a", "b", "c"]}],
   [{"name": "Ada"}, {"email": "a@b.co"}, {"name": "x", "tags": []}, {"age": 3, "tags": ["a"]},
    {"age": 3, "name": "x"}, {"name": "A", "age": 151}, {"name": "A", "age": -1},
    {"name": "A", "age": 1, "tags": ["a", "b", "c", "d"]}, {"name": 5, "age": 1}, [], None]))

S.append(("tree", {
    "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v", "kids"], "additionalProperties": False}},
    "$ref": "#/$defs/node",
}, [{"v": 1, "kids": []}, {"v": -2, "kids": [{"v": 3, "kids": [{"v": 0, "kids": []}]}, {"v": 4, "kids": []}]}],
   [{"v": 1}, {"v": 1, "kids": [{"v": 2}]}, {"v": 1.5, "kids": []}]))

S.append(("nullable", {
    "type": "object",
    "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                   "y": {"type": ["integer", "boolean", "null"]}},
    "required": ["x", "y"], "additionalProperties": False,
}, [{"x": None, "y": None}, {"x": "s", "y": True}, {"x": "", "y": -7}],
   [{"x": 1, "y": None}, {"x": None, "y": "no"}, {"x": None}]))

S.append(("enums", {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "dark \"blue\"", 7, None]},
                   "version": {"const": "v1"}, "flags": {"const": {"a": [1, 2.5, True]}}},
    "required": ["color", "version", "flags"],
}, [{"color": "red", "version": "v1", "flags": {"a": [1, 2.5, True]}},
    {"color": 7, "version": "v1", "flags": {"a": [1, 2.5, True]}},
    {"color": None, "version": "v1", "flags": {"a": [1, 2.5, True]}},
    {"color": "dark \"blue\"", "version": "v1", "flags": {"a": [1, 2.5, True]}}],
   [{"color": "blue", "version": "v1", "flags": {"a": [1, 2.5, True]}},
    {"color": "red", "version": "v2", "flags": {"a": [1, 2.5, True]}}]))

S.append(("probability", {"type": "number", "minimum": 0, "maximum": 1},
          [0, 1, 0.5, 0.125, 0.999999], [1.5, -0.1, 2, "0.5"]))
S.append(("bounded-int", {"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": 1000},
          [-9, 0, 5, 999, 42], [-10, 1000, 1001, 3.5, -11]))
S.append(("bounded-number", {"type": "number", "minimum": -2.5, "exclusiveMaximum": 3},
          [-2.5, -2, 0, 2, 2.5, -1.25], [3, -2.6, 3.5, 10]))
S.append(("code", {"type": "string", "pattern": "^[A-Z]{2}\\d{4}$"}, ["AB1234", "ZZ0000"], ["ab1234", "AB123", "AB12345"]))
S.append(("formats", {
    "type": "object",
    "properties": {f: {"type": "string", "format": f} for f in
                   ["date-time", "date", "time", "uuid", "ipv4", "ipv6", "email", "duration", "hostname", "uri"]},
    "additionalProperties": False,
}, [{"date-time": "2024-02-28T13:05:59Z", "date": "1999-12-31", "time": "23:59:59.5+01:00",
     "uuid": "123e4567-e89b-12d3-a456-426614174000", "ipv4": "192.168.0.1",
     "ipv6": "2001:db8:0:0:0:0:0:1", "email": "a.b@c-d.org", "duration": "P1Y2M3DT4H5M6S",
     "hostname": "api.example.com", "uri": "https://example.com/a/b"}, {"date": "2024-04-30"}, {}],
   [{"date": "2024-02-30"}, {"date": "24-01-01"}, {"ipv4": "256.0.0.1"}, {"time": "25:00:00Z"},
    {"uuid": "123e4567e89b12d3a456426614174000"}]))
S.append(("lengths", {"type": "string", "minLength": 2, "maxLength": 5}, ["ab", "abcde", "é€😀", "a\nb"],
          ["a", "abcdef", ""]))
S.append(("tuple", {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "number", "minimum": 0}],
                    "items": False, "minItems": 1},
          [[True], [False, 0], [True, 12.5]], [[], [1], [True, -1], [True, 1, 2]]))
S.append(("map", {"type": "object", "additionalProperties": {"type": "integer", "multipleOf": 7}},
          [{}, {"a": 7, "b": -14, "": 0}, {"k": 700}], [{"a": 8}, {"a": "7"}]))
S.append(("any-object", {"type": "object"},
          [{}, {"a": [1, {"b": None}], "c": "d"}, {"n": -1.5e-7, "t": True, "f": False}], [[], "x", 1]))
S.append(("tagged", {"oneOf": [
    {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
     "required": ["kind", "r"], "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
     "required": ["kind", "side"], "additionalProperties": False}]},
    [{"kind": "circle", "r": 1}, {"kind": "square", "side": 2.5}],
    [{"kind": "circle", "side": 1}, {"kind": "triangle", "r": 1}]))
S.append(("orders", {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "items": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                           "note": {"type": "string"}, "gift": {"type": "boolean"}},
            "required": ["sku", "qty"], "additionalProperties": False}},
        "paid": {"type": "boolean"},
    },
    "required": ["id", "items"], "additionalProperties": False,
}, [{"id": "o1", "items": [{"sku": "a", "qty": 1}]},
    {"id": "o2", "items": [{"sku": "a", "qty": 2, "gift": True}, {"sku": "b", "qty": 1, "note": "x"}], "paid": False}],
   [{"id": "o1", "items": []}, {"id": "o1", "items": [{"sku": "a", "qty": 0}]}, {"id": "o1"},
    {"id": "o1", "items": [{"qty": 1}]}, {"id": "o1", "items": [{"sku": "a", "note": "n"}]},
    {"items": [{"sku": "a", "qty": 1}]}]))
S.append(("anything", {}, [1, "s", None, [1, [2]], {"a": {}}], []))
S.append(("unicode-keys", {"type": "object", "properties": {"clé €": {"type": "string"}, "a\"b": {"type": "integer"}},
                           "required": ["clé €", "a\"b"]},
          [{"clé €": "v", "a\"b": 1}], [{"a\"b": 1}]))


def valid(text, schema):
    try:
        v = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except Exception:
        return False
    # Draft 2020-12 with its own format checker (the plain FormatChecker() mixes in draft
    # 3's meaning of "time").
    cls = jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(v)


def forms(inst):
    yield json.dumps(inst, ensure_ascii=False, separators=(", ", ": "))
    yield json.dumps(inst, ensure_ascii=False, separators=(",", ":"))
    yield json.dumps(inst, ensure_ascii=False, indent=2)


def main():
    rng = random.Random(21)
    out = []
    for name, schema, good, bad in S:
        texts = []
        for inst in good:
            for t in forms(inst):
                assert valid(t, schema), (name, t)
                texts.append({"text": t, "valid": True, "canonical": True})
        pool = [t["text"] for t in texts] + [json.dumps(b, ensure_ascii=False) for b in bad]
        for b in bad:
            t = json.dumps(b, ensure_ascii=False)
            texts.append({"text": t, "valid": valid(t, schema), "canonical": False})
        alpha = list(' {}[]:,"\\0123456789.-eE+truefalsnabcxyz\n\té€')
        for _ in range(150):
            s = list(rng.choice(pool))
            for _ in range(rng.randrange(1, 3)):
                pos = rng.randrange(len(s) + 1)
                op = rng.randrange(3)
                if op == 0:
                    s.insert(pos, rng.choice(alpha))
                elif op == 1 and s:
                    del s[min(pos, len(s) - 1)]
                elif s:
                    s[min(pos, len(s) - 1)] = rng.choice(alpha)
            t = "".join(s)
            texts.append({"text": t, "valid": valid(t, schema), "canonical": False})
        out.append({"name": name, "schema": schema, "texts": texts})
    print(json.dumps({"generator": "scripts/golden_schema.py", "cases": out}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
