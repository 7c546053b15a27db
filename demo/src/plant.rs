//! The demo plant: a deterministic asset register in CFIHOS terms.
//!
//! [`generate`] builds `asset_count` assets spread over eight process areas
//! (`U100`..`U800`). Each area gets its electrical and control infrastructure first
//! (switchboards, a transformer, MCCs, distribution boards, a UPS, controllers,
//! marshalling panels, junction boxes), then equipment modules (pump sets with their
//! motors, instrument loops with control valves, vessels with relief valves,
//! compressors, air coolers with fans, heat exchangers, gauges, gas detectors) until
//! its share of the assets is reached. Asset types and property names come from CFIHOS v2.0
//! (`demo/data/cfihos-subset.csv`); a few properties name another asset by tag
//! (see [`REFERENCE_KEYS`]).
//!
//! A small share of assets lack one mandatory property (see [`mandatory_properties`]),
//! so that validation rules have something to find.

mod area;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::rng::Rng;

/// The process areas, in tag order.
pub const AREAS: [&str; 8] = [
    "U100", "U200", "U300", "U400", "U500", "U600", "U700", "U800",
];

/// Property keys whose value is the tag of another asset of the plant. They describe
/// the plant's topology and are SYNAPSE demo conventions, not CFIHOS properties.
pub const REFERENCE_KEYS: [&str; 8] = [
    "fed_from",            // electrical supply: switchboard, transformer
    "mcc",                 // a motor's motor control centre
    "driver",              // a pump's, compressor's or fan's motor
    "motor",               // a variable speed drive's motor
    "junction_box",        // a field instrument's junction box
    "marshalling_panel",   // a junction box's marshalling (termination) panel
    "controller",          // a marshalling panel's or gas detector's controller
    "protected_equipment", // the vessel a relief valve protects
];

/// One asset as the command API's `POST /assets` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Asset {
    pub tag: String,
    pub asset_type: &'static str,
    pub discipline: &'static str,
    pub name: String,
    pub area: String,
    pub properties: Map<String, Value>,
}

impl Asset {
    /// The property as a string, if present and a string.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }
}

/// The generated plant, assets in load order (an asset's references come first,
/// except a relief valve's protected vessel and a motor's VFD, which come in the same
/// equipment module).
#[derive(Debug, Clone, PartialEq)]
pub struct Plant {
    pub assets: Vec<Asset>,
}

impl Plant {
    /// How many properties name another asset by tag (see [`REFERENCE_KEYS`]).
    pub fn reference_count(&self) -> usize {
        self.assets
            .iter()
            .map(|asset| {
                REFERENCE_KEYS
                    .iter()
                    .filter(|key| asset.text(key).is_some())
                    .count()
            })
            .sum()
    }

    /// How many assets lack at least one of their mandatory properties.
    pub fn missing_mandatory_count(&self) -> usize {
        self.assets
            .iter()
            .filter(|asset| {
                mandatory_properties(asset.asset_type)
                    .iter()
                    .any(|key| !asset.properties.contains_key(*key))
            })
            .count()
    }
}

/// The properties an asset of this type must have for the demo's validation rules.
pub fn mandatory_properties(asset_type: &str) -> &'static [&'static str] {
    match asset_type {
        "ELECTRIC_MOTOR" => &["rated_power_kw", "rated_voltage_v"],
        "CENTRIFUGAL_PUMP" => &["rated_volume_flow_rate_m3h", "design_pressure_barg"],
        "PRESSURE_TRANSMITTER"
        | "FLOW_TRANSMITTER"
        | "LEVEL_TRANSMITTER"
        | "TEMPERATURE_TRANSMITTER" => &["measuring_range_min", "measuring_range_max"],
        "SEPARATOR" | "KNOCK_OUT_DRUM" => &["design_pressure_barg"],
        "CONVENTIONAL_RELIEF_VALVE" => &["set_pressure_barg"],
        "CONTROL_VALVE" => &["failure_action"],
        _ => &[],
    }
}

/// Build a plant of exactly `asset_count` assets; the same seed gives the same plant.
pub fn generate(asset_count: usize, seed: u64) -> Plant {
    let mut assets = Vec::with_capacity(asset_count);
    for (index, budget) in area_budgets(asset_count).into_iter().enumerate() {
        // Each area has its own stream, so one area's size does not reshuffle another.
        let area_seed = seed ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        let mut rng = Rng::new(area_seed);
        assets.extend(area::build(index + 1, AREAS[index], budget, &mut rng));
    }
    Plant { assets }
}

/// Split `asset_count` over the areas, the remainder going to the first ones.
fn area_budgets(asset_count: usize) -> Vec<usize> {
    let base = asset_count / AREAS.len();
    let remainder = asset_count % AREAS.len();
    (0..AREAS.len())
        .map(|index| base + usize::from(index < remainder))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn by_tag(plant: &Plant) -> HashMap<&str, &Asset> {
        plant
            .assets
            .iter()
            .map(|asset| (asset.tag.as_str(), asset))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_plant_and_another_seed_another() {
        assert_eq!(generate(2_000, 7), generate(2_000, 7));
        assert_ne!(generate(2_000, 7), generate(2_000, 8));
    }

    #[test]
    fn the_default_plant_has_exactly_the_requested_number_of_assets() {
        for count in [0, 1, 7, 50, 999, 5_000, 12_345] {
            assert_eq!(generate(count, 1).assets.len(), count, "for {count} assets");
        }
    }

    #[test]
    fn tags_are_unique() {
        let plant = generate(20_000, 3);
        let mut seen = HashSet::new();
        for asset in &plant.assets {
            assert!(seen.insert(&asset.tag), "duplicate tag {}", asset.tag);
        }
    }

    #[test]
    fn every_motor_names_an_existing_mcc_of_its_voltage() {
        let plant = generate(5_000, 1);
        let tags = by_tag(&plant);
        let motors: Vec<_> = plant
            .assets
            .iter()
            .filter(|asset| asset.asset_type == "ELECTRIC_MOTOR")
            .collect();
        assert!(motors.len() > 500, "only {} motors", motors.len());
        for motor in motors {
            let mcc_tag = motor
                .text("mcc")
                .unwrap_or_else(|| panic!("{} has no mcc", motor.tag));
            let mcc = tags
                .get(mcc_tag)
                .unwrap_or_else(|| panic!("{mcc_tag} missing"));
            assert_eq!(mcc.asset_type, "MOTOR_CONTROL_CENTRE");
            if let Some(voltage) = motor.properties.get("rated_voltage_v") {
                assert_eq!(
                    Some(voltage),
                    mcc.properties.get("rated_voltage_v"),
                    "{}",
                    motor.tag
                );
            }
        }
    }

    #[test]
    fn every_reference_names_an_asset_of_the_plant() {
        for count in [5_000, 333, 40] {
            let plant = generate(count, 11);
            let tags = by_tag(&plant);
            for asset in &plant.assets {
                for key in REFERENCE_KEYS {
                    if let Some(target) = asset.text(key) {
                        assert!(
                            tags.contains_key(target),
                            "{}.{key} = {target} is missing",
                            asset.tag
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pumps_are_driven_by_motors_and_transmitters_wired_to_junction_boxes() {
        let plant = generate(5_000, 1);
        let tags = by_tag(&plant);
        let pumps = plant
            .assets
            .iter()
            .filter(|a| a.asset_type == "CENTRIFUGAL_PUMP");
        let mut driven = 0;
        for pump in pumps {
            if let Some(driver) = pump.text("driver") {
                assert_eq!(tags[driver].asset_type, "ELECTRIC_MOTOR");
                driven += 1;
            }
        }
        assert!(driven > 200);
        for transmitter in plant
            .assets
            .iter()
            .filter(|a| a.asset_type.ends_with("_TRANSMITTER"))
        {
            let junction_box = transmitter.text("junction_box").expect("junction_box");
            assert_eq!(tags[junction_box].asset_type, "JUNCTION_BOX");
        }
    }

    #[test]
    fn the_plant_covers_every_area_and_discipline() {
        let plant = generate(5_000, 1);
        let areas: HashSet<_> = plant.assets.iter().map(|a| a.area.as_str()).collect();
        assert_eq!(areas.len(), AREAS.len());
        let disciplines: HashSet<_> = plant.assets.iter().map(|a| a.discipline).collect();
        for discipline in [
            "ELECTRICAL",
            "INSTRUMENTATION",
            "MECHANICAL",
            "PROCESS",
            "AUTOMATION",
        ] {
            assert!(disciplines.contains(discipline), "no {discipline} asset");
        }
    }

    #[test]
    fn a_few_assets_miss_a_mandatory_property() {
        let plant = generate(5_000, 1);
        let missing = plant.missing_mandatory_count();
        assert!(
            (10..250).contains(&missing),
            "{missing} assets miss a mandatory property"
        );
    }

    #[test]
    fn asset_types_and_property_keys_come_from_the_cfihos_subset() {
        let subset = include_str!("../data/cfihos-subset.csv");
        let mut lines = subset.lines();
        let header: Vec<_> = lines.next().expect("header").split(',').collect();
        let column = |name: &str| header.iter().position(|c| *c == name).expect(name);
        let (type_column, key_column) = (column("asset_type"), column("property_key"));
        let mut known = HashSet::new();
        for line in lines {
            let fields: Vec<_> = line.split(',').collect();
            known.insert((
                fields[type_column].to_owned(),
                fields[key_column].to_owned(),
            ));
        }
        let plant = generate(5_000, 1);
        for asset in &plant.assets {
            for key in asset.properties.keys() {
                let is_reference = REFERENCE_KEYS.contains(&key.as_str());
                assert!(
                    is_reference || known.contains(&(asset.asset_type.to_owned(), key.clone())),
                    "{} {}: {key} is not in cfihos-subset.csv",
                    asset.tag,
                    asset.asset_type
                );
            }
        }
    }
}
