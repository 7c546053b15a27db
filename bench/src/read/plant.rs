//! The read benchmark's plant: four disciplines, four rules, tags prefixed by plant so
//! every import adds new assets and every execution can be aimed at one plant.
//!
//! Each plant holds 50 MCCs and 50 junction boxes, then devices in a fixed pattern of
//! ten: four motors, three transmitters, two pumps, one vessel. About half of each kind
//! matches its rule, so an execution writes events of every discipline and rule.

use serde_json::{json, Value};
use std::fmt::Write;

/// The disciplines of the plant, one rule each.
pub const DISCIPLINES: [&str; 4] = ["ELECTRICAL", "INSTRUMENTATION", "MECHANICAL", "PROCESS"];
/// MCCs and junction boxes per plant: what motors and transmitters are wired from.
const SUPPLIERS: usize = 50;
const AREAS: usize = 9;

/// One device of the pattern; `group` varies its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Motor {
        power_kw: usize,
        mcc: usize,
    },
    Transmitter {
        flow: bool,
        range_max: usize,
        junction_box: usize,
    },
    Pump {
        has_driver: bool,
    },
    Vessel {
        design_barg: usize,
    },
}

fn device(index: usize) -> Device {
    let group = index / 10;
    let slot = index % 10;
    match slot {
        0..=3 => Device::Motor {
            power_kw: (4 * group + slot) % 110 + 1,
            mcc: (group + slot) % SUPPLIERS,
        },
        4..=6 => Device::Transmitter {
            flow: slot != 5,
            range_max: (3 * group + slot) % 100 + 1,
            junction_box: (group + slot) % SUPPLIERS,
        },
        7 | 8 => Device::Pump {
            has_driver: (group + slot).is_multiple_of(2),
        },
        _ => Device::Vessel {
            design_barg: group % 40 + 1,
        },
    }
}

/// The tag prefix of plant `plant`: `P3-` for the fourth.
pub fn tag_prefix(plant: usize) -> String {
    format!("P{plant}-")
}

/// A CSV import of `assets` new assets of plant `plant` (suppliers first, then devices).
pub fn csv(plant: usize, assets: usize) -> String {
    let mut csv = header();
    csv.reserve(assets * 90);
    let p = tag_prefix(plant);
    let suppliers = SUPPLIERS.min(assets / 2);
    for index in 0..suppliers {
        let area = index % AREAS + 1;
        let _ = writeln!(
            csv,
            "{p}MCC-{n:02},MOTOR_CONTROL_CENTRE,ELECTRICAL,MCC {n},U{area}00,,,,,,",
            n = index + 1
        );
        let _ = writeln!(
            csv,
            "{p}JB-{n:02},JUNCTION_BOX,INSTRUMENTATION,Junction box {n},U{area}00,,,,,,",
            n = index + 1
        );
    }
    for index in 0..assets - 2 * suppliers {
        push_device(&mut csv, plant, index);
    }
    csv
}

/// A CSV import of `assets` devices of plant `plant` numbered from `first` (no
/// suppliers): how the sustained-rate driver adds small imports to a plant.
pub fn device_csv(plant: usize, first: usize, assets: usize) -> String {
    let mut csv = header();
    for index in first..first + assets {
        push_device(&mut csv, plant, index);
    }
    csv
}

fn header() -> String {
    "tag,asset_type,discipline,name,area,rated_power_kw,mcc,range_max,junction_box,driver,design_pressure_barg\n"
        .to_owned()
}

fn push_device(csv: &mut String, plant: usize, index: usize) {
    let p = tag_prefix(plant);
    let n = index + 1;
    let area = index % AREAS + 1;
    let _ = match device(index) {
        Device::Motor { power_kw, mcc } => writeln!(
            csv,
            "{p}M-{n:07},ELECTRIC_MOTOR,ELECTRICAL,Motor {n},U{area}00,{power_kw},{p}MCC-{:02},,,,",
            mcc + 1
        ),
        Device::Transmitter {
            flow,
            range_max,
            junction_box,
        } => {
            let (code, kind) = if flow {
                ("FT", "FLOW_TRANSMITTER")
            } else {
                ("PT", "PRESSURE_TRANSMITTER")
            };
            writeln!(
                csv,
                "{p}{code}-{n:07},{kind},INSTRUMENTATION,Transmitter {n},U{area}00,,,{range_max},{p}JB-{:02},,",
                junction_box + 1
            )
        }
        Device::Pump { has_driver } => {
            let driver = if has_driver {
                format!("{p}M-{n:07}")
            } else {
                String::new()
            };
            writeln!(
                csv,
                "{p}P-{n:07},CENTRIFUGAL_PUMP,MECHANICAL,Pump {n},U{area}00,,,,,{driver},"
            )
        }
        Device::Vessel { design_barg } => writeln!(
            csv,
            "{p}V-{n:07},PRESSURE_VESSEL,PROCESS,Vessel {n},U{area}00,,,,,,{design_barg}"
        ),
    };
}

/// One rule per discipline; each matches about half of its kind of device.
pub fn rules() -> Vec<Value> {
    vec![
        // The command benchmarks' rule: motors above 55 kW get a VFD and a power cable.
        crate::plant::rule(),
        json!({
            "name": "Transmitters ranged above 50 get a shielded signal cable from their junction box",
            "discipline": "INSTRUMENTATION",
            "priority": 20,
            "when": "(asset.asset_type == 'FLOW_TRANSMITTER' || asset.asset_type == 'PRESSURE_TRANSMITTER') && asset.properties.range_max > 50",
            "then": [
                {"type": "set_property", "name": "shielded", "value": "true"},
                {"type": "upsert_cable", "tag": "W-{asset.tag}-SIG", "cable_type": "SIGNAL",
                 "from": {"tag": "{asset.properties.junction_box}"}, "to": "asset"}
            ]
        }),
        json!({
            "name": "Pumps must name their driver",
            "discipline": "MECHANICAL",
            "priority": 30,
            "when": "asset.asset_type == 'CENTRIFUGAL_PUMP' && !has(asset.properties.driver)",
            "then": [{"type": "flag", "severity": "warning", "message": "pump {asset.tag} has no driver"}]
        }),
        json!({
            "name": "Vessels designed above 25 barg need a pressure safety valve",
            "discipline": "PROCESS",
            "priority": 40,
            "when": "asset.asset_type == 'PRESSURE_VESSEL' && asset.properties.design_pressure_barg > 25",
            "then": [{"type": "set_property", "name": "needs_psv", "value": "true"}]
        }),
    ]
}

/// What executing every rule over a plant of `assets` changes, from the pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matches {
    /// Assets given a property (motors, transmitters, vessels).
    pub updated_assets: usize,
    /// Cables created (motors, transmitters).
    pub created_cables: usize,
    /// Findings raised (pumps).
    pub findings: usize,
}

pub fn matches(assets: usize) -> Matches {
    let devices = assets - 2 * SUPPLIERS.min(assets / 2);
    let mut matches = Matches::default();
    for index in 0..devices {
        match device(index) {
            Device::Motor { power_kw, .. } if power_kw > 55 => {
                matches.updated_assets += 1;
                matches.created_cables += 1;
            }
            Device::Transmitter { range_max, .. } if range_max > 50 => {
                matches.updated_assets += 1;
                matches.created_cables += 1;
            }
            Device::Pump { has_driver: false } => matches.findings += 1,
            Device::Vessel { design_barg } if design_barg > 25 => matches.updated_assets += 1,
            _ => {}
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plant_has_its_suppliers_then_the_device_pattern_under_its_prefix() {
        let csv = csv(3, 1_000);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1_001);
        assert!(lines[1].starts_with("P3-MCC-01,MOTOR_CONTROL_CENTRE,ELECTRICAL,"));
        assert!(lines[2].starts_with("P3-JB-01,JUNCTION_BOX,INSTRUMENTATION,"));
        assert!(lines[101].starts_with("P3-M-0000001,ELECTRIC_MOTOR,ELECTRICAL,"));
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|line| line.split(',').count() == columns));
        for discipline in DISCIPLINES {
            assert!(csv.contains(discipline), "{discipline}");
        }
    }

    #[test]
    fn every_supplier_a_device_names_exists_in_the_plant() {
        let csv = csv(0, 500);
        for line in csv.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            for supplier in [cells[6], cells[8]] {
                if !supplier.is_empty() {
                    assert!(csv.contains(&format!("\n{supplier},")), "{supplier}");
                }
            }
        }
    }

    #[test]
    fn about_half_of_each_kind_matches_its_rule() {
        let matches = matches(100_000);
        // 39,960 motors + 29,970 transmitters + 9,990 vessels; half of the first two and
        // 15 of 40 pressures of the vessels match.
        assert!(
            (36_000..=41_000).contains(&matches.updated_assets),
            "{matches:?}"
        );
        assert!(
            (33_000..=37_000).contains(&matches.created_cables),
            "{matches:?}"
        );
        assert!((9_000..=11_000).contains(&matches.findings), "{matches:?}");
    }

    #[test]
    fn device_imports_continue_the_pattern_without_suppliers() {
        let csv = device_csv(9, 20, 10);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 11);
        assert!(lines[1].starts_with("P9-M-0000021,"));
        assert!(lines[10].starts_with("P9-V-0000030,"));
    }
}
