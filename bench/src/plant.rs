//! The benchmark plant: motors fed from MCCs, as a CSV import, and the rule run on it.

use serde_json::{json, Value};
use sqlx::PgPool;
use std::fmt::Write;

/// MCCs in the plant; every motor names one of them as its `mcc`.
pub const MCCS: usize = 50;
/// Motors get `rated_power_kw` 1..=110 in turn: 55 of every 110 lie above the rule's
/// 55 kW threshold, so half of the motors match.
const POWER_STEPS: usize = 110;
const AREAS: usize = 9;

/// A CSV file of `assets` rows: `MCCS` MCCs, then motors, deterministic.
pub fn csv(assets: usize) -> String {
    let mut csv = String::with_capacity(assets * 80);
    csv.push_str("tag,asset_type,discipline,name,area,rated_power_kw,mcc\n");
    let mccs = MCCS.min(assets);
    for index in 0..mccs {
        let area = index % AREAS + 1;
        let _ = writeln!(
            csv,
            "{},MOTOR_CONTROL_CENTER,ELECTRICAL,Motor control centre {},U{area}00,,",
            mcc_tag(index),
            index + 1
        );
    }
    for index in 0..assets - mccs {
        let power = index % POWER_STEPS + 1;
        let mcc = index % MCCS.max(1);
        let area = mcc % AREAS + 1;
        let _ = writeln!(
            csv,
            "M-{:06},ELECTRIC_MOTOR,ELECTRICAL,Motor {},U{area}00,{power},{}",
            index + 1,
            index + 1,
            mcc_tag(mcc)
        );
    }
    csv
}

fn mcc_tag(index: usize) -> String {
    format!("MCC-{:02}", index + 1)
}

/// How many assets of [`csv`]`(assets)` the rule changes.
pub fn expected_matches(assets: usize) -> usize {
    let motors = assets.saturating_sub(MCCS);
    (0..motors)
        .filter(|index| index % POWER_STEPS + 1 > 55)
        .count()
}

/// Motors above 55 kW need a VFD (a property) and get a power cable from their MCC,
/// sized by power.
pub fn rule() -> Value {
    json!({
        "name": "Motors above 55 kW need a VFD and a power cable from their MCC",
        "discipline": "ELECTRICAL",
        "priority": 10,
        "when": "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
        "then": [
            {"type": "set_property", "name": "needs_vfd", "value": "true"},
            {"type": "upsert_cable", "tag": "W-{asset.tag}-PWR", "cable_type": "POWER",
             "from": {"tag": "{asset.properties.mcc}"}, "to": "asset",
             "properties": {"cross_section_mm2": "asset.properties.rated_power_kw > 100 ? 95 : 50"}}
        ]
    })
}

/// A fingerprint of the current state (assets, cables, relationships, findings), as the
/// rollback tests compare it: content only, not versions (a rollback is a new version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StateDigest {
    pub rows: i64,
    pub md5: String,
}

pub async fn state_digest(pool: &PgPool) -> Result<StateDigest, sqlx::Error> {
    let (rows, md5): (i64, String) = sqlx::query_as(
        "with state(key, value) as (
             select 'asset:' || tag, jsonb_build_object('type', asset_type, 'discipline', discipline,
                 'name', name, 'area', area, 'properties', properties) from assets
             union all select 'cable:' || tag, jsonb_build_object('from', from_asset, 'to', to_asset,
                 'type', cable_type, 'properties', properties) from cables
             union all select 'relationship:' || kind || ':' || from_asset || ':' || to_asset,
                 properties from relationships
             union all select 'finding:' || asset_id || ':' || message, to_jsonb(severity)
                 from findings)
         select count(*), md5(coalesce(string_agg(key || '=' || value::text, E'\\n' order by key), ''))
         from state",
    )
    .fetch_one(pool)
    .await?;
    Ok(StateDigest { rows, md5 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_has_a_header_and_one_line_per_asset() {
        let csv = csv(1_000);
        assert_eq!(csv.lines().count(), 1_001);
        assert!(csv
            .lines()
            .nth(1)
            .is_some_and(|line| line.starts_with("MCC-01,")));
        assert!(csv
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("M-000950,")));
    }

    #[test]
    fn about_half_of_the_motors_match() {
        let matches = expected_matches(100_000);
        assert!((49_000..=50_500).contains(&matches), "{matches}");
    }
}
