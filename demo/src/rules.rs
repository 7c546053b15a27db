//! The demo's rules: what an electrical, instrumentation and process team would
//! actually run over a plant like the generated one. Each is sent to `POST /rules`.
//!
//! Conditions guard optional properties with `has(...)`, so an asset that lacks one is
//! simply not matched (and the validation rules below flag it).

use serde_json::{json, Value};

/// The field instruments that get a signal cable to their junction box.
const TRANSMITTERS: &str =
    "['PRESSURE_TRANSMITTER', 'FLOW_TRANSMITTER', 'LEVEL_TRANSMITTER', 'TEMPERATURE_TRANSMITTER']";

/// Every demo rule, in the order they are defined (execution order is by priority).
pub fn demo_rules() -> Vec<Value> {
    vec![
        json!({
            "name": "Motors above 55 kW are speed controlled by a VSD",
            "discipline": "ELECTRICAL",
            "priority": 10,
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && has(asset.properties.rated_power_kw) && asset.properties.rated_power_kw > 55.0",
            "then": [
                {"type": "set_property", "name": "speed_control", "value": "'VSD'"},
                {"type": "upsert_asset", "tag": "{asset.tag.replace('M-', 'VFD-')}", "asset_type": "VARIABLE_SPEED_DRIVE_UNIT",
                 "discipline": "ELECTRICAL", "name": "Variable speed drive for {asset.tag}", "area": "{asset.area}",
                 "properties": {"rated_power_kw": "asset.properties.rated_power_kw", "motor": "asset.tag", "rated_frequency_hz": "50"}},
                {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "{asset.tag.replace('M-', 'VFD-')}"}, "to": "asset"}
            ]
        }),
        json!({
            "name": "Every motor gets a power cable from its MCC, sized by rating",
            "discipline": "ELECTRICAL",
            "priority": 20,
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && has(asset.properties.mcc) && has(asset.properties.rated_power_kw)",
            "then": [
                {"type": "upsert_cable", "tag": "W-{asset.tag}-PWR", "cable_type": "POWER", "discipline": "ELECTRICAL",
                 "from": {"tag": "{asset.properties.mcc}"}, "to": "asset",
                 "properties": {
                     "cross_section_mm2": "asset.properties.rated_power_kw > 160.0 ? 185 : asset.properties.rated_power_kw > 55.0 ? 95 : asset.properties.rated_power_kw > 15.0 ? 25 : 4",
                     "cores": "4",
                     "rated_voltage_v": "has(asset.properties.rated_voltage_v) ? asset.properties.rated_voltage_v : 400"
                 }},
                {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "{asset.properties.mcc}"}, "to": "asset"}
            ]
        }),
        json!({
            "name": "Each transmitter gets a signal cable to its junction box",
            "discipline": "INSTRUMENTATION",
            "priority": 30,
            "when": format!("asset.asset_type in {TRANSMITTERS} && has(asset.properties.junction_box)"),
            "then": [
                {"type": "upsert_cable", "tag": "W-{asset.tag}-SIG", "cable_type": "SIGNAL", "discipline": "INSTRUMENTATION",
                 "from": "asset", "to": {"tag": "{asset.properties.junction_box}"},
                 "properties": {"pairs": "1", "screened": "true", "signal": "asset.properties.output_signal_type"}},
                {"type": "create_relationship", "kind": "CONNECTED_TO", "from": "asset", "to": {"tag": "{asset.properties.junction_box}"}}
            ]
        }),
        json!({
            "name": "Each control valve gets a signal cable to its junction box",
            "discipline": "INSTRUMENTATION",
            "priority": 30,
            "when": "asset.asset_type == 'CONTROL_VALVE' && has(asset.properties.junction_box)",
            "then": [
                {"type": "upsert_cable", "tag": "W-{asset.tag}-SIG", "cable_type": "SIGNAL", "discipline": "INSTRUMENTATION",
                 "from": {"tag": "{asset.properties.junction_box}"}, "to": "asset",
                 "properties": {"pairs": "1", "screened": "true"}}
            ]
        }),
        json!({
            "name": "Control loops: the loop's transmitter controls its valve",
            "discipline": "AUTOMATION",
            "priority": 40,
            "when": "asset.asset_type == 'CONTROL_VALVE' && asset.tag.matches('^[FPLT]V-[0-9]+$')",
            "then": [
                {"type": "create_relationship", "kind": "CONTROLS",
                 "from": {"tag": "{asset.tag.replace('V-', 'T-')}"}, "to": "asset"}
            ]
        }),
        json!({
            "name": "Pumps without a driver get an electric motor",
            "discipline": "MECHANICAL",
            "priority": 50,
            "when": "asset.asset_type == 'CENTRIFUGAL_PUMP' && !has(asset.properties.driver)",
            "then": [
                {"type": "upsert_asset", "tag": "{asset.tag.replace('P-', 'M-')}", "asset_type": "ELECTRIC_MOTOR",
                 "discipline": "ELECTRICAL", "name": "Motor for {asset.tag}", "area": "{asset.area}",
                 "properties": {"rated_voltage_v": "400", "rated_frequency_hz": "50", "starting_method": "'DOL'"}},
                {"type": "set_property", "name": "driver", "value": "asset.tag.replace('P-', 'M-')"},
                {"type": "create_relationship", "kind": "CONNECTED_TO", "from": {"tag": "{asset.tag.replace('P-', 'M-')}"}, "to": "asset"}
            ]
        }),
        json!({
            "name": "SIL-rated instruments get a proof test interval",
            "discipline": "INSTRUMENTATION",
            "priority": 60,
            "when": "has(asset.properties.safety_integrity_level) && asset.properties.safety_integrity_level != 'none'",
            "then": [
                {"type": "set_property", "name": "proof_test_interval_months",
                 "value": "asset.properties.safety_integrity_level == 'SIL 2' ? 12 : 24"}
            ]
        }),
        json!({
            "name": "Motors must state rated power and voltage",
            "discipline": "ELECTRICAL",
            "priority": 90,
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && !(has(asset.properties.rated_power_kw) && has(asset.properties.rated_voltage_v))",
            "then": [{"type": "flag", "severity": "error", "message": "{asset.tag}: rated power or voltage missing"}]
        }),
        json!({
            "name": "Transmitters must state their measuring range",
            "discipline": "INSTRUMENTATION",
            "priority": 90,
            "when": format!("asset.asset_type in {TRANSMITTERS} && !(has(asset.properties.measuring_range_min) && has(asset.properties.measuring_range_max))"),
            "then": [{"type": "flag", "severity": "error", "message": "{asset.tag}: measuring range missing"}]
        }),
        json!({
            "name": "Motors in Zone 1 must be explosion rated",
            "discipline": "ELECTRICAL",
            "priority": 90,
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && has(asset.properties.explosion_protection_zone) && asset.properties.explosion_protection_zone == 'Zone 1' && !(has(asset.properties.explosion_rated_item) && asset.properties.explosion_rated_item)",
            "then": [{"type": "flag", "severity": "warning", "message": "{asset.tag}: Zone 1 motor not explosion rated"}]
        }),
        json!({
            "name": "Relief valves must state their set pressure",
            "discipline": "PROCESS",
            "priority": 90,
            "when": "asset.asset_type == 'CONVENTIONAL_RELIEF_VALVE' && !has(asset.properties.set_pressure_barg)",
            "then": [{"type": "flag", "severity": "error", "message": "{asset.tag}: set pressure missing"}]
        }),
    ]
}

/// Load the plant as one CSV import, define the demo rules (skipping names already
/// defined, so a re-run changes nothing), and run every enabled rule once.
pub async fn import_define_and_run(
    command_url: &str,
    token: Option<&str>,
    csv: Vec<u8>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let base = command_url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .context("building the HTTP client")?;
    let authorised = |request: reqwest::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };

    let started = std::time::Instant::now();
    let imported =
        authorised(client.post(format!("{base}/assets/import?file_name=demo-plant.csv")))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .context("importing the demo plant")?;
    let status = imported.status();
    let body: Value = imported.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "import answered {status}: {body}");
    eprintln!(
        "demo plant imported in {:.1?}: {} created, {} updated, {} unchanged",
        started.elapsed(),
        body["created"],
        body["updated"],
        body["unchanged"]
    );

    let existing: Value = authorised(client.get(format!("{base}/rules")))
        .send()
        .await
        .context("listing rules")?
        .json()
        .await
        .context("reading the rule list")?;
    // Name and id of each rule there is.
    let defined: Vec<(&str, Value)> = existing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| Some((rule["name"].as_str()?, rule["id"].clone())))
        .collect();
    let mut added = 0;
    // The demo's own rules: the database may hold others (an engineer's), which the
    // demo neither runs nor depends on.
    let mut rule_ids = Vec::new();
    for rule in demo_rules() {
        let name = rule["name"].as_str().unwrap_or_default();
        if let Some((_, id)) = defined.iter().find(|(defined, _)| *defined == name) {
            rule_ids.push(id.clone());
            continue;
        }
        let reply = authorised(client.post(format!("{base}/rules")))
            .json(&rule)
            .send()
            .await?;
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "defining `{name}` answered {status}: {body}"
        );
        rule_ids.push(body["id"].clone());
        added += 1;
    }
    eprintln!(
        "{added} demo rules defined ({} already there)",
        demo_rules().len() - added
    );

    let started = std::time::Instant::now();
    let reply = authorised(client.post(format!("{base}/rules/execute")))
        .json(&json!({"rule_ids": rule_ids, "wait": true}))
        .send()
        .await
        .context("executing the demo rules")?;
    let status = reply.status();
    let report: Value = reply.json().await.context("reading the execution report")?;
    anyhow::ensure!(
        status.is_success() && report["status"] == "completed",
        "executing the demo rules answered {status}: {report}"
    );
    eprintln!(
        "demo rules executed in {:.1?} (batch {}): {} executed, {} skipped, {} errors, {} changes",
        started.elapsed(),
        report["correlation_id"],
        report["totals"]["executed"],
        report["totals"]["skipped"],
        report["totals"]["errors"],
        report["totals"]["changes"]
    );
    Ok(())
}
