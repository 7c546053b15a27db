//! One process area: its infrastructure, then equipment modules until its budget.
//!
//! Tags follow common plant conventions: equipment numbers start with the area digit
//! (`P-101A` is pump 01 of area U100, `M-101A` its motor), instrument loops too
//! (`FT-2001` and `FV-2001` are loop 001 of area U200), and area infrastructure carries
//! the area (`MCC-U100-01`, `JB-U100-03`). Numbers widen past 99 and 999 instead of
//! wrapping, and the leading area digit keeps them unique across areas.

use serde_json::{json, Value};

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
}

const MODULES: [(Module, u32); 7] = [
    (Module::PumpSet, 20),
    (Module::InstrumentLoop, 52),
    (Module::Vessel, 10),
    (Module::Compressor, 3),
    (Module::AirCooler, 4),
    (Module::HeatExchanger, 5),
    (Module::Gauge, 12),
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

    /// Switchboards, transformer, MCCs, distribution boards, UPS, controllers,
    /// marshalling panels and junction boxes, sized for `budget` assets, each after
    /// whatever it references.
    fn infrastructure(&mut self, budget: usize) -> Vec<Asset> {
        let area = self.name;
        let mut assets = Vec::new();
        let mv_switchboard = format!("SWB-{area}-01");
        let transformer = format!("TR-{area}-01");
        let lv_switchboard = format!("SWB-{area}-02");
        assets.push(self.asset(
            mv_switchboard.clone(),
            "SWITCHBOARD",
            "ELECTRICAL",
            format!("{area} 6.6 kV switchboard"),
            json!({"rated_voltage_v": MV_VOLTAGE, "rated_current_a": 2500, "rated_short_circuit_current_ka": 31.5, "rated_frequency_hz": 50}),
        ));
        assets.push(self.asset(
            transformer.clone(),
            "TRANSFORMER",
            "ELECTRICAL",
            format!("{area} 6.6/0.4 kV distribution transformer"),
            json!({"rated_primary_winding_voltage_v": MV_VOLTAGE, "rated_secondary_winding_voltage_v": LV_VOLTAGE, "rated_output_apparent_power_kva": 2500, "thermal_insulation_class": "F", "fed_from": mv_switchboard}),
        ));
        assets.push(self.asset(
            lv_switchboard.clone(),
            "SWITCHBOARD",
            "ELECTRICAL",
            format!("{area} 400 V main switchboard"),
            json!({"rated_voltage_v": LV_VOLTAGE, "rated_current_a": 4000, "rated_short_circuit_current_ka": 65, "rated_frequency_hz": 50, "fed_from": transformer}),
        ));
        self.mv_mcc = format!("MCC-{area}-01");
        assets.push(self.asset(
            self.mv_mcc.clone(),
            "MOTOR_CONTROL_CENTRE",
            "ELECTRICAL",
            format!("{area} 6.6 kV motor control centre"),
            json!({"rated_voltage_v": MV_VOLTAGE, "rated_current_a": 1250, "rated_short_circuit_current_ka": 31.5, "rated_frequency_hz": 50, "ingress_protection": "IP42", "fed_from": mv_switchboard}),
        ));
        // About a fifth of the assets are motors; an LV MCC feeds ~25-40 of them.
        let lv_mcc_count = (budget / 160).max(1);
        for index in 0..lv_mcc_count {
            let tag = format!("MCC-{area}-{:02}", index + 2);
            self.lv_mccs.push(tag.clone());
            assets.push(self.asset(
                tag,
                "MOTOR_CONTROL_CENTRE",
                "ELECTRICAL",
                format!("{area} 400 V motor control centre {}", index + 1),
                json!({"rated_voltage_v": LV_VOLTAGE, "rated_current_a": 1600, "rated_short_circuit_current_ka": 50, "rated_frequency_hz": 50, "ingress_protection": "IP42", "fed_from": lv_switchboard}),
            ));
        }
        for index in 1..=2 {
            assets.push(self.asset(
                format!("DB-{area}-{index:02}"),
                "DISTRIBUTION_BOARD",
                "ELECTRICAL",
                format!("{area} lighting and small power distribution board {index}"),
                json!({"rated_voltage_v": LV_VOLTAGE, "rated_current_a": 250, "fed_from": lv_switchboard}),
            ));
        }
        assets.push(self.asset(
            format!("UPS-{area}-01"),
            "UPS_UNIT",
            "ELECTRICAL",
            format!("{area} instrument UPS"),
            json!({"rated_output_apparent_power_kva": 40, "rated_output_voltage_v": 230, "autonomy_time_h": 0.5, "fed_from": lv_switchboard}),
        ));
        let controllers = [format!("PLC-{area}-01"), format!("PLC-{area}-02")];
        for (controller, system) in controllers
            .iter()
            .zip(["process control system", "safety instrumented system"])
        {
            assets.push(self.asset(
                controller.clone(),
                "PROCESS_DATA_ACQUISITION_AND_CONTROL",
                "AUTOMATION",
                format!("{area} {system} controller"),
                json!({"explosion_protection_zone": "Non-hazardous"}),
            ));
        }
        // About a third of the assets are field instruments; ~15 per junction box,
        // ~8 junction boxes per marshalling panel.
        let junction_box_count = (budget / 40).max(1);
        let panel_count = junction_box_count.div_ceil(8);
        let panels: Vec<String> = (1..=panel_count)
            .map(|i| format!("MP-{area}-{i:02}"))
            .collect();
        for (index, panel) in panels.iter().enumerate() {
            assets.push(self.asset(
                panel.clone(),
                "TERMINATION_PANEL",
                "AUTOMATION",
                format!("{area} marshalling panel {}", index + 1),
                json!({"explosion_protection_zone": "Non-hazardous", "controller": controllers[index % 2]}),
            ));
        }
        for index in 0..junction_box_count {
            let tag = format!("JB-{area}-{:02}", index + 1);
            self.junction_boxes.push(tag.clone());
            let zone = self.zone();
            assets.push(self.asset(
                tag,
                "JUNCTION_BOX",
                "INSTRUMENTATION",
                format!("{area} instrument junction box {}", index + 1),
                json!({"rated_voltage_v": 24, "ingress_protection": "IP66", "explosion_protection_zone": zone, "marshalling_panel": panels[index / 8]}),
            ));
        }
        assets
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
        }
    }

    /// A motor on the right MCC, its VFD when it has one (after the motor).
    fn motor(&mut self, tag: String, driven: &str, power_kw: f64, speed_rpm: u32) -> Vec<Asset> {
        let medium_voltage = power_kw > 400.0;
        let (voltage, mcc) = if medium_voltage {
            (MV_VOLTAGE, self.mv_mcc.clone())
        } else {
            let mcc = self.lv_mccs[self.next_lv_mcc % self.lv_mccs.len()].clone();
            self.next_lv_mcc += 1;
            (LV_VOLTAGE, mcc)
        };
        // Larger machines are more often speed controlled; the rest start direct on
        // line (or star-delta), which leaves work for a "VFD for large motors" rule.
        let with_vfd = power_kw >= 75.0 && self.rng.chance(0.35);
        let starting_method = if with_vfd {
            "VFD"
        } else if power_kw >= 37.0 && self.rng.chance(0.3) {
            "star-delta"
        } else {
            "DOL"
        };
        let zone = self.zone();
        let mut assets = vec![self.asset(
            tag.clone(),
            "ELECTRIC_MOTOR",
            "ELECTRICAL",
            format!("Motor for {driven}"),
            json!({
                "rated_power_kw": power_kw,
                "rated_voltage_v": voltage,
                "rated_speed_rpm": speed_rpm,
                "rated_frequency_hz": 50,
                "starting_method": starting_method,
                "explosion_protection_zone": zone,
                "explosion_rated_item": zone != "Non-hazardous",
                "mcc": mcc,
            }),
        )];
        if with_vfd {
            let vfd = format!("VFD-{}", tag.trim_start_matches("M-"));
            assets.push(self.asset(
                vfd,
                "VARIABLE_SPEED_DRIVE_UNIT",
                "ELECTRICAL",
                format!("Variable speed drive for {tag}"),
                json!({"rated_power_kw": power_kw, "rated_voltage_v": voltage, "rated_frequency_hz": 50, "motor": tag}),
            ));
        }
        assets
    }

    /// Duty and standby pumps (A/B) with their motors, sized from the hydraulics.
    fn pump_set(&mut self) -> Vec<Asset> {
        let number = self.equipment_number();
        let fluid = *self.rng.pick(&PUMP_FLUIDS);
        let service = *self.rng.pick(&PUMP_SERVICES);
        let flow_m3h = self.rng.between(5.0, 400.0, 0);
        let differential_bar = self.rng.between(2.0, 30.0, 1);
        let design_pressure_barg = ((differential_bar * 1.5 + 10.0) / 5.0).ceil() * 5.0;
        let design_temperature_c = *self.rng.pick(&[65.0, 85.0, 120.0, 150.0]);
        // Shaft power at 65 % efficiency, motor with a 10 % margin: P = Q * dp / eta.
        let shaft_kw = flow_m3h / 3600.0 * differential_bar * 100.0 / 0.65;
        let power_kw = motor_rating(shaft_kw * 1.1);
        let speed_rpm = if power_kw > 110.0 { 1480 } else { 2960 };
        let mut assets = Vec::new();
        for train in ["A", "B"] {
            let pump_tag = format!("P-{number}{train}");
            let pump_name = format!("{} {service} pump {train}", capitalise(fluid));
            let mut properties = json!({
                "rated_volume_flow_rate_m3h": flow_m3h,
                "rated_operating_differential_pressure_bar": differential_bar,
                "design_pressure_barg": design_pressure_barg,
                "design_temperature_c": design_temperature_c,
                "rated_speed_rpm": speed_rpm,
                "fluid_name": fluid,
                "driver_type": "electric motor",
            });
            if !self.rng.chance(PUMP_WITHOUT_MOTOR) {
                let motor_tag = format!("M-{number}{train}");
                properties["driver"] = json!(motor_tag);
                assets.extend(self.motor(motor_tag, &pump_tag, power_kw, speed_rpm));
            }
            assets.push(self.asset(
                pump_tag,
                "CENTRIFUGAL_PUMP",
                "MECHANICAL",
                pump_name,
                properties,
            ));
        }
        assets
    }

    /// A transmitter of one kind, wired to the next junction box of the area.
    fn transmitter(&mut self, kind: char, loop_number: &str, service: &str) -> Asset {
        let (asset_type, low, high, unit) = match kind {
            'P' => (
                "PRESSURE_TRANSMITTER",
                0.0,
                *self.rng.pick(&[10.0, 16.0, 25.0, 40.0, 100.0]),
                "barg",
            ),
            'F' => (
                "FLOW_TRANSMITTER",
                0.0,
                *self.rng.pick(&[50.0, 100.0, 250.0, 500.0]),
                "m3/h",
            ),
            'L' => (
                "LEVEL_TRANSMITTER",
                0.0,
                *self.rng.pick(&[1000.0, 2000.0, 3000.0]),
                "mm",
            ),
            _ => (
                "TEMPERATURE_TRANSMITTER",
                *self.rng.pick(&[-20.0, 0.0]),
                *self.rng.pick(&[150.0, 200.0, 400.0]),
                "degC",
            ),
        };
        let junction_box =
            self.junction_boxes[self.next_junction_box % self.junction_boxes.len()].clone();
        self.next_junction_box += 1;
        let sil = self.rng.weighted(&SIL);
        let zone = self.zone();
        let measured = match kind {
            'P' => "pressure",
            'F' => "flow",
            'L' => "level",
            _ => "temperature",
        };
        self.asset(
            format!("{kind}T-{loop_number}"),
            asset_type,
            "INSTRUMENTATION",
            format!("{} {measured} transmitter", capitalise(service)),
            json!({
                "measuring_range_min": low,
                "measuring_range_max": high,
                "measuring_range_unit": unit,
                "output_signal_type": "4-20 mA HART",
                "safety_integrity_level": sil,
                "explosion_protection_zone": zone,
                "junction_box": junction_box,
            }),
        )
    }

    /// A control valve on loop `loop_number`, on the same junction box as its transmitter.
    fn control_valve(
        &mut self,
        kind: char,
        loop_number: &str,
        service: &str,
        junction_box: Value,
    ) -> Asset {
        let failure_action = *self.rng.pick(&["fail closed", "fail open", "fail last"]);
        let diameter = *self.rng.pick(&[25, 50, 80, 100, 150, 200, 300]);
        let pressure = self.rng.between(2.0, 60.0, 1);
        let temperature = self.rng.between(15.0, 180.0, 0);
        let fluid = *self.rng.pick(&PUMP_FLUIDS);
        let sil = self.rng.weighted(&SIL);
        self.asset(
            format!("{kind}V-{loop_number}"),
            "CONTROL_VALVE",
            "INSTRUMENTATION",
            format!("{} control valve", capitalise(service)),
            json!({
                "nominal_diameter_mm": diameter,
                "normal_operating_pressure_barg": pressure,
                "normal_operating_temperature_c": temperature,
                "failure_action": failure_action,
                "input_signal_type": "4-20 mA HART",
                "fluid_name": fluid,
                "safety_integrity_level": sil,
                "junction_box": junction_box,
            }),
        )
    }

    /// A transmitter and, on most loops, its control valve.
    fn instrument_loop(&mut self) -> Vec<Asset> {
        let loop_number = self.loop_number();
        let kind = self
            .rng
            .weighted(&[('P', 35), ('F', 25), ('L', 15), ('T', 25)]);
        let service = *self.rng.pick(&PUMP_FLUIDS);
        let transmitter = self.transmitter(kind, &loop_number, service);
        let mut assets = Vec::new();
        if self.rng.chance(0.6) {
            let junction_box = transmitter.properties["junction_box"].clone();
            let valve = self.control_valve(kind, &loop_number, service, junction_box);
            assets.push(transmitter);
            assets.push(valve);
        } else {
            assets.push(transmitter);
        }
        assets
    }

    /// A separator or knock-out drum, its relief valve and its level loop.
    fn vessel(&mut self) -> Vec<Asset> {
        let number = self.equipment_number();
        let tag = format!("V-{number}");
        let knock_out = self.rng.chance(0.3);
        let operating_barg = self.rng.between(2.0, 80.0, 1);
        let design_barg = ((operating_barg * 1.1 + 2.0) / 5.0).ceil() * 5.0;
        let (asset_type, fluid, name) = if knock_out {
            let fluid = *self.rng.pick(&GAS_FLUIDS);
            (
                "KNOCK_OUT_DRUM",
                fluid,
                format!("{} knock-out drum", capitalise(fluid)),
            )
        } else {
            let stage = *self.rng.pick(&[
                "Inlet",
                "Test",
                "HP production",
                "LP production",
                "Second stage",
            ]);
            ("SEPARATOR", "well fluid", format!("{stage} separator"))
        };
        let orientation = if knock_out || self.rng.chance(0.7) {
            "vertical"
        } else {
            "horizontal"
        };
        let mut properties = json!({
            "design_pressure_barg": design_barg,
            "upper_limit_operating_pressure_barg": operating_barg,
            "fluid_name": fluid,
            "orientation": orientation,
        });
        if !knock_out {
            properties["design_temperature_c"] = json!(*self.rng.pick(&[85.0, 120.0, 150.0]));
        }
        let vessel = self.asset(tag.clone(), asset_type, "PROCESS", name.clone(), properties);
        let relief_loop = self.loop_number();
        let inlet = *self.rng.pick(&[25, 40, 50, 80, 100]);
        let relief_valve = self.asset(
            format!("PSV-{relief_loop}"),
            "CONVENTIONAL_RELIEF_VALVE",
            "PROCESS",
            format!("{name} relief valve"),
            json!({
                "set_pressure_barg": design_barg,
                "nominal_inlet_diameter_mm": inlet,
                "nominal_outlet_diameter_mm": inlet * 2,
                "fluid_name": fluid,
                "protected_equipment": tag,
            }),
        );
        let level_loop = self.loop_number();
        let transmitter = self.transmitter('L', &level_loop, &name);
        let junction_box = transmitter.properties["junction_box"].clone();
        let valve = self.control_valve('L', &level_loop, &name, junction_box);
        vec![vessel, relief_valve, transmitter, valve]
    }

    /// A gas compressor on a medium-voltage motor.
    fn compressor(&mut self) -> Vec<Asset> {
        let number = self.equipment_number();
        let fluid = *self.rng.pick(&GAS_FLUIDS);
        let tag = format!("K-{number}");
        let motor_tag = format!("M-{number}");
        let power_kw = *self.rng.pick(&[500.0, 800.0, 1250.0, 2000.0, 3150.0]);
        let inlet = self.rng.between(1.5, 30.0, 1);
        let outlet = (inlet * self.rng.between(2.0, 4.0, 1) * 10.0).round() / 10.0;
        let mass_flow = self.rng.between(5_000.0, 120_000.0, -2);
        let mut assets = self.motor(motor_tag.clone(), &tag, power_kw, 2980);
        assets.push(self.asset(
            tag,
            "CENTRIFUGAL_COMPRESSOR",
            "MECHANICAL",
            format!("{} compressor", capitalise(fluid)),
            json!({
                "normal_operating_inlet_pressure_bara": inlet,
                "normal_operating_outlet_pressure_bara": outlet,
                "normal_operating_mass_flow_rate_kgh": mass_flow,
                "fluid_name": fluid,
                "driver": motor_tag,
            }),
        ));
        assets
    }

    /// An air cooler with two fans, each on its own motor.
    fn air_cooler(&mut self) -> Vec<Asset> {
        let number = self.equipment_number();
        let fluid = *self.rng.pick(&PUMP_FLUIDS);
        let tag = format!("E-{number}");
        let inlet = self.rng.between(80.0, 160.0, 0);
        let outlet = inlet - self.rng.between(25.0, 60.0, 0);
        let area = self.rng.between(200.0, 4000.0, 0);
        let mut assets = vec![self.asset(
            tag.clone(),
            "AIR_COOLED_HEAT_EXCHANGER",
            "MECHANICAL",
            format!("{} air cooler", capitalise(fluid)),
            json!({
                "heat_transfer_area_m2": area,
                "normal_operating_inlet_temperature_c": inlet,
                "normal_operating_outlet_temperature_c": outlet,
                "fluid_name": fluid,
            }),
        )];
        let power_kw = *self.rng.pick(&[15.0, 18.5, 22.0, 30.0, 37.0]);
        for bay in ["A", "B"] {
            let fan_tag = format!("F-{number}{bay}");
            let motor_tag = format!("M-{number}{bay}");
            assets.extend(self.motor(motor_tag.clone(), &fan_tag, power_kw, 1480));
            let air_flow = self.rng.between(100_000.0, 400_000.0, -3);
            assets.push(self.asset(
                fan_tag,
                "FAN",
                "MECHANICAL",
                format!("{tag} cooling fan {bay}"),
                json!({
                    "normal_operating_mass_flow_rate_kgh": air_flow,
                    "fluid_name": "air",
                    "driver": motor_tag,
                }),
            ));
        }
        assets
    }

    fn heat_exchanger(&mut self) -> Vec<Asset> {
        let number = self.equipment_number();
        let shell = *self.rng.pick(&PUMP_FLUIDS);
        let tube = *self
            .rng
            .pick(&["cooling water", "seawater", "steam", "hot oil"]);
        let duty = if tube == "steam" || tube == "hot oil" {
            "heater"
        } else {
            "cooler"
        };
        let area = self.rng.between(20.0, 900.0, 0);
        let tube_pressure = self.rng.between(2.0, 15.0, 1);
        vec![self.asset(
            format!("E-{number}"),
            "SHELL_AND_TUBE_HEAT_EXCHANGER",
            "MECHANICAL",
            format!("{} {duty}", capitalise(shell)),
            json!({
                "heat_transfer_area_m2": area,
                "shell_side_fluid_name": shell,
                "tube_side_fluid_name": tube,
                "tube_side_normal_operating_inlet_pressure_barg": tube_pressure,
            }),
        )]
    }

    /// A local pressure gauge: one asset, also used to fill the last slots.
    fn gauge(&mut self) -> Vec<Asset> {
        let loop_number = self.loop_number();
        let zone = self.zone();
        let service = *self.rng.pick(&PUMP_FLUIDS);
        vec![self.asset(
            format!("PG-{loop_number}"),
            "PRESSURE_GAUGE",
            "INSTRUMENTATION",
            format!("{} pressure gauge", capitalise(service)),
            json!({"explosion_protection_zone": zone}),
        )]
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
