"""20 JSON schemas of the kinds applications send: flat and nested objects, enums, arrays, numbers with
bounds, booleans, optional fields, nullable values, references."""
from __future__ import annotations

S = {"type": "string", "maxLength": 40}

SCHEMAS: list[dict] = [
    {"type": "object", "properties": {"name": S, "age": {"type": "integer"}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"city": S, "temperature_c": {"type": "number"}},
     "required": ["city", "temperature_c"]},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 4}},
     "required": ["tags"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "reason": S}, "required": ["ok", "reason"]},
    {"type": "object", "properties": {"point": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}}, "required": ["point"]},
    {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
     "required": ["score"]},
    {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"id": {"type": "integer"}, "done": {"type": "boolean"}},
        "required": ["id", "done"]}}}, "required": ["items"]},
    {"type": "object", "properties": {"status": {"enum": ["idle", "moving", "charging", "error"]},
                                      "battery": {"type": "number", "minimum": 0, "maximum": 100}},
     "required": ["status", "battery"]},
    {"type": "object", "properties": {"title": S, "author": {"type": "object", "properties": {
        "first": S, "last": S}, "required": ["first", "last"]}, "year": {"type": "integer"}},
     "required": ["title", "author", "year"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 5},
    {"type": "object", "properties": {"answer": {"enum": ["yes", "no", "maybe"]},
                                      "confidence": {"type": "number"}}, "required": ["answer", "confidence"]},
    {"type": "object", "properties": {"readings": {"type": "array", "maxItems": 4, "items": {"type": "number"}},
                                      "unit": {"enum": ["C", "F", "K"]}}, "required": ["readings", "unit"]},
    {"type": "object", "properties": {"name": S, "email": {"type": ["string", "null"], "maxLength": 40}},
     "required": ["name", "email"]},
    {"type": "object", "properties": {"plan": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"action": {"enum": ["move", "grab", "wait"]},
                                         "target": S}, "required": ["action", "target"]}}},
     "required": ["plan"]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                      "sum": {"type": "integer"}}, "required": ["a", "b", "sum"]},
    {"type": "object", "properties": {"language": S, "popular": {"type": "boolean"},
                                      "since": {"type": "integer", "minimum": 1950, "maximum": 2030}},
     "required": ["language", "popular", "since"]},
    {"type": "object", "$defs": {"pos": {"type": "object", "properties": {"lat": {"type": "number"},
                                                                          "lon": {"type": "number"}},
                                         "required": ["lat", "lon"]}},
     "properties": {"from": {"$ref": "#/$defs/pos"}, "to": {"$ref": "#/$defs/pos"}}, "required": ["from", "to"]},
    {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                                      "keywords": {"type": "array", "items": S, "maxItems": 3}},
     "required": ["sentiment", "keywords"]},
    {"type": "object", "properties": {"matrix": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "maxItems": 2, "items": {"type": "integer"}}}, "label": {"const": "m"}},
     "required": ["matrix", "label"]},
]
