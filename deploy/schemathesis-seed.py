"""Seed a small plant through the command API and print a schemathesis configuration.

Used by deploy/schemathesis.sh. Without existing ids, schemathesis only ever reaches the
404 branch of `PATCH /assets/{id}`, `GET /events/assets/{id}/history`,
`POST /rules/rollback` and the like; with them it fuzzes the handlers' real work. The
configuration binds each id parameter (and the ids inside bodies) to a dictionary of
the seeded ids, drawn with probability 0.7, so random ids are still tried.

Usage: schemathesis-seed.py COMMAND_URL QUERY_URL TOKEN OUTPUT_DIR
writes OUTPUT_DIR/command-service.toml and OUTPUT_DIR/query-service.toml.
Standard library only (it runs in the schemathesis virtualenv's Python).
"""

import json
import sys
import time
import urllib.error
import urllib.request

command_url, query_url, token, output_dir = sys.argv[1:5]


def call(method, url, body=None, expected=(200, 201, 202)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    if status not in expected:
        sys.exit(f"seed: {method} {url} answered {status}: {text}")
    return json.loads(text) if text else {}


def created(outcome, event_type):
    """The aggregate id of the `event_type` event of a single change, read back from the
    timeline (the command's answer lists event ids and types only)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        timeline = call("GET", f"{query_url}/events/timeline?correlation_id={outcome['correlation_id']}")
        for event in timeline.get("events", []):
            if event.get("event_type") == event_type:
                return event["aggregate_id"]
        time.sleep(0.2)
    sys.exit(f"seed: no {event_type} on the timeline of batch {outcome['correlation_id']}")


assets = {}
batches = []
for tag, asset_type, discipline, properties in [
    ("MCC-ST-01", "MOTOR_CONTROL_CENTRE", "ELECTRICAL", {"rated_voltage_v": 400}),
    ("M-ST-01", "ELECTRIC_MOTOR", "ELECTRICAL", {"rated_power_kw": 75, "mcc": "MCC-ST-01"}),
    ("M-ST-02", "ELECTRIC_MOTOR", "ELECTRICAL", {"rated_power_kw": 11, "mcc": "MCC-ST-01"}),
    ("PT-ST-01", "PRESSURE_TRANSMITTER", "INSTRUMENTATION", {"range_max_bar": 16}),
]:
    outcome = call("POST", f"{command_url}/assets", {
        "tag": tag, "asset_type": asset_type, "discipline": discipline,
        "area": "U900", "properties": properties,
    })
    assets[tag] = outcome["asset"]["id"]
    batches.append(outcome["correlation_id"])

cable = call("POST", f"{command_url}/cables", {
    "tag": "W-ST-01", "cable_type": "POWER", "discipline": "ELECTRICAL",
    "from_asset": assets["MCC-ST-01"], "to_asset": assets["M-ST-01"], "properties": {},
})
relationship = call("POST", f"{command_url}/relationships", {
    "kind": "FEEDS", "from_asset": assets["MCC-ST-01"], "to_asset": assets["M-ST-01"],
})
rule = call("POST", f"{command_url}/rules", {
    "name": "schemathesis: large motors are checked", "discipline": "ELECTRICAL",
    "when": 'asset.asset_type == "ELECTRIC_MOTOR" && asset.properties.rated_power_kw > 55',
    "then": [{"type": "set_property", "name": "vfd_required", "value": "true"}],
})
execution = call("POST", f"{command_url}/rules/execute", {"rule_ids": [rule["id"]], "wait": True})
batches += [cable["correlation_id"], relationship["correlation_id"]]
if execution.get("correlation_id"):
    batches.append(execution["correlation_id"])

def values(items):
    return json.dumps(list(items))


dictionaries = f"""# Written by deploy/schemathesis-seed.py for one run; not kept.
[dictionaries.asset_ids]
values = {values(assets.values())}

[dictionaries.cable_ids]
values = {values([created(cable, "CABLE_CREATED")])}

[dictionaries.relationship_ids]
values = {values([created(relationship, "RELATIONSHIP_CREATED")])}

[dictionaries.rule_ids]
values = {values([rule["id"]])}

[dictionaries.batch_ids]
values = {values(batches)}

[dictionaries.disciplines]
values = ["ELECTRICAL", "INSTRUMENTATION"]
"""

# Which parameters draw from which dictionary, per service (path regex -> bindings).
bindings = {
    "command-service": [
        (r"^/assets/\{id\}$", {"path.id": "asset_ids"}),
        (r"^/cables/\{id\}$", {"path.id": "cable_ids"}),
        (r"^/relationships/\{id\}$", {"path.id": "relationship_ids"}),
        (r"^/rules/\{id\}$", {"path.id": "rule_ids"}),
        (r"^/(cables|relationships)$", {"body.from_asset": "asset_ids", "body.to_asset": "asset_ids"}),
        (r"^/rules/execute$", {"body.rule_ids[*]": "rule_ids", "body.filters.asset_ids[*]": "asset_ids"}),
        (r"^/rules/rollback$", {"body.correlation_id": "batch_ids"}),
    ],
    "query-service": [
        (r"^/assets/\{id\}$", {"path.id": "asset_ids"}),
        (r"^/events/assets/\{id\}/history$", {"path.id": "asset_ids"}),
        (r"^/batches/\{correlation_id\}$", {"path.correlation_id": "batch_ids"}),
        (r"^/disciplines/\{discipline\}$", {"path.discipline": "disciplines"}),
        (r"^/events/timeline$", {"query.asset_id": "asset_ids", "query.correlation_id": "batch_ids",
                                "query.rule_id": "rule_ids", "query.discipline": "disciplines"}),
    ],
}
for service, operations in bindings.items():
    with open(f"{output_dir}/{service}.toml", "w", encoding="utf-8") as config:
        config.write(dictionaries)
        for path_regex, parameters in operations:
            entries = ", ".join(
                f'"{name}" = {{ dictionary = "{dictionary}", probability = 0.7 }}'
                for name, dictionary in parameters.items()
            )
            # A TOML literal string: the regex's backslashes stay as they are.
            config.write(f"\n[[operations]]\ninclude-path-regex = '{path_regex}'\n")
            config.write(f"parameters = {{ {entries} }}\n")
