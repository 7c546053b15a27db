//! A small plant and rules for tests: motors fed from MCCs, pumps, transmitters.

use serde_json::{json, Value};

/// Assets of a small plant: two MCCs, motors of various sizes, pumps and a transmitter.
pub fn small_plant() -> Vec<Value> {
    let mut assets = vec![
        json!({"tag": "MCC-U100-01", "asset_type": "MOTOR_CONTROL_CENTRE", "discipline": "ELECTRICAL", "area": "U100", "properties": {"rated_voltage_v": 400}}),
        json!({"tag": "MCC-U200-01", "asset_type": "MOTOR_CONTROL_CENTRE", "discipline": "ELECTRICAL", "area": "U200", "properties": {"rated_voltage_v": 400}}),
        json!({"tag": "JB-U100-01", "asset_type": "JUNCTION_BOX", "discipline": "INSTRUMENTATION", "area": "U100", "properties": {}}),
        json!({"tag": "FT-1001", "asset_type": "FLOW_TRANSMITTER", "discipline": "INSTRUMENTATION", "area": "U100", "properties": {"junction_box": "JB-U100-01"}}),
    ];
    for (index, power) in [15, 37, 75, 90, 110, 160].iter().enumerate() {
        let area = if index % 2 == 0 { "U100" } else { "U200" };
        assets.push(json!({
            "tag": format!("M-10{index}"),
            "asset_type": "ELECTRIC_MOTOR",
            "discipline": "ELECTRICAL",
            "area": area,
            "properties": {"rated_power_kw": power, "mcc": format!("MCC-{area}-01")}
        }));
    }
    assets.push(json!({"tag": "P-101A", "asset_type": "CENTRIFUGAL_PUMP", "discipline": "MECHANICAL", "area": "U100", "properties": {}}));
    assets
}

/// Large motors get a VFD, a power cable from their MCC, and a FEEDS relationship.
pub fn vfd_rule() -> Value {
    json!({
        "name": "Motors above 55 kW get a VFD and a power cable from their MCC",
        "discipline": "ELECTRICAL",
        "priority": 10,
        "when": "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
        "then": [
            {"type": "set_property", "name": "needs_vfd", "value": "true"},
            {"type": "upsert_asset", "tag": "VFD-{asset.tag}", "asset_type": "VARIABLE_FREQUENCY_DRIVE",
             "discipline": "ELECTRICAL", "area": "{asset.area}",
             "properties": {"rated_power_kw": "asset.properties.rated_power_kw"}},
            {"type": "upsert_cable", "tag": "W-{asset.tag}-PWR", "cable_type": "POWER",
             "from": {"tag": "{asset.properties.mcc}"}, "to": "asset",
             "properties": {"cross_section_mm2": "asset.properties.rated_power_kw > 100 ? 95 : 50"}},
            {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "VFD-{asset.tag}"}, "to": "asset"}
        ]
    })
}

/// Pumps without a driver are flagged.
pub fn pump_flag_rule() -> Value {
    json!({
        "name": "Pumps must name their driver",
        "discipline": "MECHANICAL",
        "priority": 20,
        "when": "asset.asset_type == 'CENTRIFUGAL_PUMP' && !has(asset.properties.driver)",
        "then": [{"type": "flag", "severity": "warning", "message": "pump {asset.tag} has no driver"}]
    })
}

/// Instrument ranges must be positive: a transmitter without a range cannot be judged,
/// so the condition errors for it (a `RULE_ERROR`), and one with a range is flagged.
pub fn instrument_range_rule() -> Value {
    json!({
        "name": "Transmitter ranges are checked",
        "discipline": "INSTRUMENTATION",
        "priority": 30,
        "when": "asset.asset_type == 'FLOW_TRANSMITTER' && asset.properties.range_m3h > 0",
        "then": [{"type": "flag", "severity": "info", "message": "{asset.tag} range checked"}]
    })
}

/// `assets` (as [`small_plant`] gives them) as a CSV file for `POST /assets/import`:
/// the fixed columns, then one column per property any asset has (empty where absent).
pub fn as_csv(assets: &[Value]) -> String {
    let mut properties: Vec<String> = Vec::new();
    for asset in assets {
        for name in asset["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !properties.contains(name) {
                properties.push(name.clone());
            }
        }
    }
    let cell = |value: &Value| match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut csv = String::from("tag,asset_type,discipline,area");
    for name in &properties {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push('\n');
    for asset in assets {
        let mut row: Vec<String> = ["tag", "asset_type", "discipline", "area"]
            .iter()
            .map(|field| cell(&asset[*field]))
            .collect();
        row.extend(
            properties
                .iter()
                .map(|name| cell(&asset["properties"][name])),
        );
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    csv
}

/// `count` motors tagged `{prefix}0000`, `{prefix}0001`, ... in area U100, each with
/// `properties`.
pub fn motors(prefix: &str, count: usize, properties: Value) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({"tag": format!("{prefix}{index:04}"), "asset_type": "ELECTRIC_MOTOR",
                   "discipline": "ELECTRICAL", "area": "U100", "properties": properties})
        })
        .collect()
}

/// `count` pumps without a driver (`P-0000`, `P-0001`, ...): each one a finding of
/// [`pump_flag_rule`], so a run over them writes many events and no state.
pub fn pumps(count: usize) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({"tag": format!("P-{index:04}"), "asset_type": "CENTRIFUGAL_PUMP",
                   "discipline": "MECHANICAL", "area": "U100", "properties": {}})
        })
        .collect()
}
