#!/usr/bin/env python3
"""The structured-output schema corpus (tests/server/data/schema_corpus.json).

Written for tokenmill, in the shapes of real API schemas and of JSONSchemaBench's
categories (function-calling parameters, GitHub-style configs of easy/medium/hard
difficulty, Kubernetes-like specs, Snowplow-like analytics events, JSONSchemaStore-like
tool configs, Washington-Post-like content), plus schemas that use features the front end
refuses (each with the feature the 400 must name). Hand-written anchors first, then
seeded combinations of realistic fields. Deterministic: re-running gives the same file.

    .venv/bin/python scripts/make_schema_corpus.py > tests/server/data/schema_corpus.json
"""
import json
import random

rng = random.Random(2020)
CORPUS = []


def add(name, category, schema, prompt, expect="ok"):
    CORPUS.append({"name": name, "category": category, "schema": schema, "prompt": prompt,
                   "expect": expect})


def obj(props, required=None, extra=False, **kw):
    s = {"type": "object", "properties": props,
         "required": list(props) if required is None else required}
    if not extra:
        s["additionalProperties"] = False
    s.update(kw)
    return s


S = {"type": "string"}
I = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}


def e(*vals):
    return {"type": "string", "enum": list(vals)}


def arr(items, **kw):
    return dict({"type": "array", "items": items}, **kw)


def nullable(x):
    return {"anyOf": [x, {"type": "null"}]}


# ---- hand-written anchors: the shapes people send most ----
add("person", "api", obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 130}}),
    "Describe a fictional person.")
add("weather-call", "function", obj({"location": S, "unit": e("celsius", "fahrenheit")}, ["location"]),
    "Call get_weather for Paris.")
add("calendar-event", "api", obj({"title": S, "date": {"type": "string", "format": "date"},
                                  "start": {"type": "string", "format": "time"},
                                  "attendees": arr({"type": "string", "format": "email"}, maxItems=5)},
                                 ["title", "date"]), "Create a calendar event for a team lunch.")
add("math-steps", "api", obj({"steps": arr(obj({"explanation": S, "output": S}), minItems=1, maxItems=4),
                              "final_answer": S}), "Solve 8x + 31 = 2 step by step.")
add("car", "api", obj({"brand": S, "model": S, "car_type": e("sedan", "SUV", "Truck", "Coupe")}),
    "Describe the most iconic car of the 90's.")
add("sentiment", "api", obj({"label": e("positive", "negative", "neutral"),
                             "confidence": {"type": "number", "minimum": 0, "maximum": 1}}),
    "Classify the sentiment of: 'I loved the movie!'")
add("address", "api", obj({"street": S, "city": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                           "country": {"type": "string", "minLength": 2, "maxLength": 2}}),
    "Give a US mailing address.")
add("uuid-record", "api", obj({"id": {"type": "string", "format": "uuid"},
                               "created": {"type": "string", "format": "date-time"}}),
    "Create a record with an id and a creation time.")
add("tree", "hard", {"$defs": {"node": obj({"value": I, "children": arr({"$ref": "#/$defs/node"}, maxItems=3)})},
                     "$ref": "#/$defs/node"}, "Build a small tree of integers.")
add("linked-list", "hard", {"$defs": {"cell": obj({"head": S, "tail": nullable({"$ref": "#/$defs/cell"})})},
                            "$ref": "#/$defs/cell"}, "A linked list of three fruits.")
add("shape-union", "hard", {"oneOf": [
    obj({"kind": {"const": "circle"}, "radius": {"type": "number", "exclusiveMinimum": 0}}),
    obj({"kind": {"const": "rect"}, "w": {"type": "number", "minimum": 0}, "h": {"type": "number", "minimum": 0}})]},
    "Describe a geometric shape.")
add("tuple", "hard", {"type": "array", "prefixItems": [S, I, B], "items": False, "minItems": 3},
    "A name, an age and whether they are a member, as a JSON array.")
add("scores-map", "hard", {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
    "Scores of three students as a JSON object.")
add("multiple-of", "hard", obj({"quantity": {"type": "integer", "multipleOf": 5}, "note": S}),
    "Order some pencils (sold in packs of 5).")
add("nullable-fields", "api", obj({"name": S, "nickname": nullable(S), "age": nullable(I)}),
    "A person who may have a nickname.")
add("ipv4-host", "config", obj({"host": {"type": "string", "format": "hostname"},
                                "ip": {"type": "string", "format": "ipv4"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
    "A server's host name, IP address and port.")
add("duration-task", "config", obj({"task": S, "timeout": {"type": "string", "format": "duration"}}),
    "A task and its ISO 8601 timeout.")
add("any-value", "easy", {}, "Any JSON value.")
add("plain-string", "easy", {"type": "string", "maxLength": 40}, "A short greeting, as a JSON string.")
add("int-range", "easy", {"type": "integer", "minimum": -50, "maximum": 50}, "A number between -50 and 50.")
add("bool", "easy", {"type": "boolean"}, "Is the sky blue? Answer true or false.")
add("tags", "easy", arr(S, minItems=1, maxItems=5), "A few tags for a blog post about cooking.")
add("pydantic-style", "api", {
    "$defs": {"Item": {"properties": {"name": {"title": "Name", "type": "string"},
                                      "price": {"title": "Price", "type": "number"}},
                       "required": ["name", "price"], "title": "Item", "type": "object", "additionalProperties": False}},
    "properties": {"items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
                   "total": {"title": "Total", "type": "number"}},
    "required": ["items", "total"], "title": "Receipt", "type": "object", "additionalProperties": False},
    "A receipt with two items.")
add("k8s-container", "kubernetes", obj({
    "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,20}$"}, "image": S,
    "ports": arr(obj({"containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                      "protocol": e("TCP", "UDP")}, ["containerPort"]), maxItems=3),
    "imagePullPolicy": e("Always", "IfNotPresent", "Never")}, ["name", "image"]),
    "A Kubernetes container spec for nginx.")
add("snowplow-page-view", "snowplow", obj({
    "event_id": {"type": "string", "format": "uuid"}, "page_url": {"type": "string", "format": "uri"},
    "referrer": nullable({"type": "string", "format": "uri"}), "duration_ms": {"type": "integer", "minimum": 0},
    "user_agent": {"type": "string", "maxLength": 60}}, ["event_id", "page_url"]),
    "A page view event.")
add("wapo-article", "washingtonpost", obj({
    "headline": {"type": "string", "maxLength": 50}, "byline": arr(S, maxItems=3),
    "published": {"type": "string", "format": "date-time"}, "section": e("politics", "sports", "tech", "opinion"),
    "word_count": {"type": "integer", "minimum": 0}}, ["headline", "section"]),
    "An article about a local football game.")

# ---- refused on purpose: the 400 must name the feature ----
UNSUPPORTED = [
    ("not", {"not": {"type": "string"}}, "'not'"),
    ("unique-tags", arr(S, uniqueItems=True), "'uniqueItems'"),
    ("pattern-props", {"type": "object", "patternProperties": {"^x-": S}}, "'patternProperties'"),
    ("if-then", {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}, "'if'"),
    ("allof-two", {"allOf": [obj({"a": S}, extra=True), obj({"b": I}, extra=True)]}, "'allOf' with more than one"),
    ("credit-card", {"type": "string", "format": "credit-card"}, "format 'credit-card'"),
    ("min-props", {"type": "object", "minProperties": 2}, "'minProperties'"),
    ("remote-ref", {"$ref": "https://example.com/schemas/user.json"}, "another document"),
    ("dep-required", {"type": "object", "properties": {"a": S, "b": S}, "dependentRequired": {"a": ["b"]}}, "'dependentRequired'"),
    ("contains", arr(I, contains={"const": 3}), "'contains'"),
    ("lookahead", {"type": "string", "pattern": "^(?=.*[0-9])[a-z0-9]{8}$"}, "lookaround"),
    ("overlapping-oneof", {"oneOf": [S, {"type": "string", "maxLength": 3}]}, "'oneOf'"),
    ("fractional-multiple", {"type": "number", "multipleOf": 0.01}, "'multipleOf'"),
    ("property-names", {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}, "'propertyNames'"),
    ("unevaluated", {"type": "object", "properties": {"a": S}, "unevaluatedProperties": False}, "'unevaluatedProperties'"),
]
for name, schema, what in UNSUPPORTED:
    add(name, "unsupported", schema, "Anything.", expect="unsupported:" + what)

# ---- seeded combinations of realistic fields ----
FIELDS = {
    "id": lambda: rng.choice([S, I, {"type": "string", "format": "uuid"}]),
    "name": lambda: rng.choice([S, {"type": "string", "maxLength": 30}, {"type": "string", "minLength": 1}]),
    "title": lambda: S,
    "email": lambda: {"type": "string", "format": "email"},
    "age": lambda: {"type": "integer", "minimum": 0, "maximum": 120},
    "count": lambda: {"type": "integer", "minimum": 0},
    "price": lambda: rng.choice([N, {"type": "number", "minimum": 0}, {"type": "number", "minimum": 0, "maximum": 10000}]),
    "rating": lambda: rng.choice([{"type": "integer", "minimum": 1, "maximum": 5}, {"type": "number", "minimum": 0, "maximum": 5}]),
    "active": lambda: B,
    "status": lambda: e(*rng.choice([("active", "inactive"), ("open", "closed", "pending"), ("draft", "published")])),
    "priority": lambda: e("low", "medium", "high"),
    "created_at": lambda: {"type": "string", "format": "date-time"},
    "date": lambda: {"type": "string", "format": "date"},
    "url": lambda: {"type": "string", "format": "uri"},
    "tags": lambda: arr(S, maxItems=rng.choice([3, 5, 10])),
    "notes": lambda: nullable(S),
    "country_code": lambda: {"type": "string", "pattern": "^[A-Z]{2}$"},
    "currency": lambda: e("USD", "EUR", "GBP", "JPY"),
    "phone": lambda: {"type": "string", "pattern": "^\\+[0-9]{7,12}$"},
    "version": lambda: {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"},
    "percent": lambda: {"type": "number", "minimum": 0, "maximum": 100},
    "quantity": lambda: {"type": "integer", "minimum": 1, "maximum": 99},
    "ip": lambda: {"type": "string", "format": rng.choice(["ipv4", "ipv6"])},
    "enabled": lambda: B,
    "description": lambda: {"type": "string", "maxLength": 80},
    "score": lambda: {"type": "number"},
    "level": lambda: {"type": "integer", "minimum": 1, "maximum": 10},
    "category": lambda: e("books", "music", "games", "food"),
    "color": lambda: e("red", "green", "blue"),
    "language": lambda: e("en", "fr", "de", "es"),
}

DOMAINS = [
    ("function", ["search_flights", "book_hotel", "send_email", "create_issue", "convert_currency", "get_stock_price",
                  "translate_text", "schedule_meeting", "set_reminder", "order_food", "play_music", "get_directions",
                  "calculate_tip", "check_inventory", "create_invoice", "reset_password", "lookup_order", "rate_product"]),
    ("api", ["user", "product", "order", "invoice", "review", "payment", "subscription", "ticket", "comment",
             "shipment", "coupon", "profile", "notification", "session"]),
    ("config", ["service", "database", "cache", "logging", "feature_flag", "cron_job", "webhook", "proxy",
                "build", "deployment"]),
    ("snowplow", ["click_event", "signup_event", "purchase_event", "search_event", "video_play", "error_event",
                  "share_event", "form_submit"]),
    ("kubernetes", ["pod", "service_port", "config_map", "volume", "probe", "resources", "ingress_rule"]),
    ("washingtonpost", ["article", "author", "gallery", "video", "podcast_episode"]),
]


def random_object(depth):
    n = rng.randint(2, 6 if depth == 0 else 3)
    keys = rng.sample(sorted(FIELDS), n)
    props = {k: FIELDS[k]() for k in keys}
    if depth == 0 and rng.random() < 0.35:
        props["items" if rng.random() < 0.5 else "details"] = (
            arr(random_object(1), maxItems=rng.choice([2, 3])) if rng.random() < 0.5 else random_object(1))
    required = [k for k in props if rng.random() < 0.7] or [next(iter(props))]
    return obj(props, required)


count = {}
while len([c for c in CORPUS if c["expect"] == "ok"]) < 230:
    cat, names = rng.choice(DOMAINS)
    base = rng.choice(names)
    count[base] = count.get(base, 0) + 1
    schema = random_object(0)
    if cat == "function" and rng.random() < 0.5:  # tool parameters often allow nothing else
        schema["additionalProperties"] = False
    if rng.random() < 0.1:
        schema = {"$defs": {"Thing": schema}, "$ref": "#/$defs/Thing"}
    difficulty = "easy" if len(json.dumps(schema)) < 250 else "medium" if len(json.dumps(schema)) < 600 else "hard"
    fields = ", ".join(schema.get("properties", schema.get("$defs", {}).get("Thing", {}).get("properties", {})))
    add(f"{base}-{count[base]}", f"{cat}/{difficulty}", schema, f"A {base.replace('_', ' ')} with {fields}.")

print(json.dumps({"generator": "scripts/make_schema_corpus.py", "schemas": CORPUS}, indent=1))
