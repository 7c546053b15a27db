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

/// The most data rows the command service takes in one import (its `MAX_ROWS`).
pub const IMPORT_ROWS: usize = 200_000;

/// The plant of `assets` rows (`MCCS` MCCs, then motors, deterministic) as CSV files
/// of at most `rows_per_file` data rows each, every file with the header: a plant
/// larger than one import allows is imported file by file. The MCCs come first; a
/// motor names its MCC by tag, which the rule looks up when it runs, so the files need
/// no order.
pub fn csv_files(assets: usize, rows_per_file: usize) -> Vec<String> {
    const HEADER: &str = "tag,asset_type,discipline,name,area,rated_power_kw,mcc\n";
    let rows_per_file = rows_per_file.max(1);
    let mccs = MCCS.min(assets);
    let mut files = Vec::with_capacity(assets.div_ceil(rows_per_file));
    for first in (0..assets).step_by(rows_per_file) {
        let last = (first + rows_per_file).min(assets);
        let mut csv = String::with_capacity((last - first) * 80 + HEADER.len());
        csv.push_str(HEADER);
        for row in first..last {
            if row < mccs {
                let area = row % AREAS + 1;
                let _ = writeln!(
                    csv,
                    "{},MOTOR_CONTROL_CENTER,ELECTRICAL,Motor control centre {},U{area}00,,",
                    mcc_tag(row),
                    row + 1
                );
            } else {
                let index = row - mccs;
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
        }
        files.push(csv);
    }
    files
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

/// The motors [`rule`] changes, flagged instead: a finding each, no state change.
pub fn flag_rule() -> Value {
    json!({
        "name": "Motors above 55 kW are flagged for a VFD review",
        "discipline": "ELECTRICAL",
        "priority": 10,
        "when": "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
        "then": [{"type": "flag", "severity": "info", "message": "{asset.tag}: review the need for a VFD"}]
    })
}

/// A later rule over what [`rule`] changed: every motor that needs a VFD gets its VFD
/// checked. Its batch changes the same motors again, so rolling back the first batch
/// conflicts on every one of them (its cables are still the first batch's alone).
pub fn follow_up_rule() -> Value {
    json!({
        "name": "Motors that need a VFD get it checked",
        "discipline": "ELECTRICAL",
        "priority": 20,
        "when": "asset.asset_type == 'ELECTRIC_MOTOR' && has(asset.properties.needs_vfd)",
        "then": [{"type": "set_property", "name": "vfd_checked", "value": "true"}]
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

    /// The whole plant as one file.
    fn csv(assets: usize) -> String {
        csv_files(assets, assets.max(1)).concat()
    }

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
    fn a_large_plant_is_split_into_files_that_each_have_the_header() {
        let files = csv_files(1_000, 300);
        assert_eq!(files.len(), 4);
        for file in &files {
            assert!(file.starts_with("tag,asset_type,"));
        }
        let rows: Vec<usize> = files.iter().map(|file| file.lines().count() - 1).collect();
        assert_eq!(rows, vec![300, 300, 300, 100]);
        let whole: String = files
            .iter()
            .enumerate()
            .map(|(index, file)| match index {
                0 => file.as_str(),
                _ => file.split_once('\n').map_or("", |(_, rows)| rows),
            })
            .collect();
        assert_eq!(whole, csv(1_000));
    }

    #[test]
    fn about_half_of_the_motors_match() {
        let matches = expected_matches(100_000);
        assert!((49_000..=50_500).contains(&matches), "{matches}");
    }
}
