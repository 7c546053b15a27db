//! One process area: its infrastructure, then equipment modules until its budget.
//!
//! Tags follow common plant conventions: equipment numbers start with the area digit
//! (`P-101A` is pump 01 of area U100, `M-101A` its motor), instrument loops too
//! (`FT-2001` and `FV-2001` are loop 001 of area U200), and area infrastructure carries
//! the area (`MCC-U100-01`, `JB-U100-03`). Numbers widen past 99 and 999 instead of
//! wrapping, and the leading area digit keeps them unique across areas.

mod equipment;
mod infrastructure;
mod instruments;

use serde_json::Value;

use super::{mandatory_properties, Asset};
use crate::rng::Rng;

/// Probability that an asset lacks one of its mandatory properties: about 1 in 100,
/// enough for a validation rule to find dozens in the default plant.
const MISSING_MANDATORY: f64 = 0.01;

/// Probability that a pump has no motor yet (a rule can create one).
const PUMP_WITHOUT_MOTOR: f64 = 0.03;

const LV_VOLTAGE: i64 = 400;
const MV_VOLTAGE: i64 = 6600;

/// IEC standard motor ratings (kW).
const MOTOR_RATINGS_KW: [f64; 27] = [
    0.75, 1.1, 1.5, 2.2, 3.0, 4.0, 5.5, 7.5, 11.0, 15.0, 18.5, 22.0, 30.0, 37.0, 45.0, 55.0, 75.0,
    90.0, 110.0, 132.0, 160.0, 200.0, 250.0, 315.0, 355.0, 400.0, 450.0,
];

const PUMP_FLUIDS: [&str; 10] = [
    "crude oil",
    "produced water",
    "condensate",
    "diesel",
    "methanol",
    "cooling water",
    "lube oil",
    "MEG",
    "seawater",
    "amine",
];
const PUMP_SERVICES: [&str; 8] = [
    "transfer",
    "booster",
    "charge",
    "injection",
    "export",
    "circulation",
    "reflux",
    "drain",
];
const GAS_FLUIDS: [&str; 5] = [
    "natural gas",
    "fuel gas",
    "flare gas",
    "export gas",
    "nitrogen",
];
const ZONES: [(&str, u32); 3] = [("Zone 1", 3), ("Zone 2", 6), ("Non-hazardous", 2)];
const SIL: [(&str, u32); 3] = [("none", 85), ("SIL 1", 10), ("SIL 2", 5)];

/// What a module of equipment is: drawn with these weights until the budget is spent.
#[derive(Clone, Copy)]
enum Module {
    PumpSet,
    InstrumentLoop,
    Vessel,
    Compressor,
    AirCooler,
    HeatExchanger,
    Gauge,
    GasDetector,
}

const MODULES: [(Module, u32); 8] = [
    (Module::PumpSet, 20),
    (Module::InstrumentLoop, 52),
    (Module::Vessel, 10),
    (Module::Compressor, 3),
    (Module::AirCooler, 4),
    (Module::HeatExchanger, 5),
    (Module::Gauge, 12),
    (Module::GasDetector, 8),
];

/// Builds one area's assets; see the module documentation for the tag scheme.
struct Area<'r> {
    digit: usize,
    name: &'static str,
    rng: &'r mut Rng,
    next_equipment: usize,
    next_loop: usize,
    mv_mcc: String,
    lv_mccs: Vec<String>,
    junction_boxes: Vec<String>,
    /// The area's safety instrumented system controller (fire and gas detection).
    safety_controller: String,
    /// Round-robin positions, so loads spread evenly.
    next_lv_mcc: usize,
    next_junction_box: usize,
}

/// The assets of area `name` (number `digit`, 1-based), exactly `budget` of them.
pub fn build(digit: usize, name: &'static str, budget: usize, rng: &mut Rng) -> Vec<Asset> {
    let mut area = Area {
        digit,
        name,
        rng,
        next_equipment: 1,
        next_loop: 1,
        mv_mcc: String::new(),
        lv_mccs: Vec::new(),
        junction_boxes: Vec::new(),
        safety_controller: String::new(),
        next_lv_mcc: 0,
        next_junction_box: 0,
    };
    let mut assets = area.infrastructure(budget);
    assets.truncate(budget);
    while assets.len() < budget {
        let remaining = budget - assets.len();
        let module = area.rng.weighted(&MODULES);
        let mut built = area.module(module);
        if built.len() > remaining {
            // A module is added whole, so no reference points past the budget; the
            // last few slots get single-asset modules.
            built = area.module(Module::Gauge);
        }
        assets.extend(built);
    }
    for asset in &mut assets {
        area.maybe_drop_mandatory(asset);
    }
    assets
}

impl Area<'_> {
    fn asset(
        &self,
        tag: String,
        asset_type: &'static str,
        discipline: &'static str,
        name: String,
        properties: Value,
    ) -> Asset {
        let Value::Object(properties) = properties else {
            unreachable!("asset properties are always built with json!({{...}})")
        };
        Asset {
            tag,
            asset_type,
            discipline,
            name,
            area: self.name.to_owned(),
            properties,
        }
    }

    /// The next junction box of the area, round robin.
    fn next_junction_box(&mut self) -> String {
        let junction_box =
            self.junction_boxes[self.next_junction_box % self.junction_boxes.len()].clone();
        self.next_junction_box += 1;
        junction_box
    }

    fn zone(&mut self) -> &'static str {
        self.rng.weighted(&ZONES)
    }

    fn equipment_number(&mut self) -> String {
        let number = format!("{}{:02}", self.digit, self.next_equipment);
        self.next_equipment += 1;
        number
    }

    fn loop_number(&mut self) -> String {
        let number = format!("{}{:03}", self.digit, self.next_loop);
        self.next_loop += 1;
        number
    }

    fn module(&mut self, module: Module) -> Vec<Asset> {
        match module {
            Module::PumpSet => self.pump_set(),
            Module::InstrumentLoop => self.instrument_loop(),
            Module::Vessel => self.vessel(),
            Module::Compressor => self.compressor(),
            Module::AirCooler => self.air_cooler(),
            Module::HeatExchanger => self.heat_exchanger(),
            Module::Gauge => self.gauge(),
            Module::GasDetector => self.gas_detector(),
        }
    }

    /// Drop one mandatory property of `asset`, now and then.
    fn maybe_drop_mandatory(&mut self, asset: &mut Asset) {
        let mandatory = mandatory_properties(asset.asset_type);
        if !mandatory.is_empty() && self.rng.chance(MISSING_MANDATORY) {
            let key = *self.rng.pick(mandatory);
            asset.properties.remove(key);
        }
    }
}

/// The smallest standard motor rating that covers `required_kw`.
fn motor_rating(required_kw: f64) -> f64 {
    MOTOR_RATINGS_KW
        .iter()
        .copied()
        .find(|rating| *rating >= required_kw)
        .unwrap_or(MOTOR_RATINGS_KW[MOTOR_RATINGS_KW.len() - 1])
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
