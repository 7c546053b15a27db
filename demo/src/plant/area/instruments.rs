//! Field instruments: transmitters, control valves, instrument loops, gauges and gas
//! detectors, each wired to a junction box of its area.

use serde_json::{json, Value};

use super::{capitalise, Area, PUMP_FLUIDS, SIL};
use crate::plant::Asset;

impl Area<'_> {
    /// A transmitter of one kind, wired to the next junction box of the area.
    pub(super) fn transmitter(&mut self, kind: char, loop_number: &str, service: &str) -> Asset {
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
        let junction_box = self.next_junction_box();
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
    pub(super) fn control_valve(
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
    pub(super) fn instrument_loop(&mut self) -> Vec<Asset> {
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

    /// A flammable gas detector on the safety instrumented system (alarm at 10 and
    /// 20 % of the lower explosive limit, the usual pair).
    pub(super) fn gas_detector(&mut self) -> Vec<Asset> {
        let loop_number = self.loop_number();
        let junction_box = self.next_junction_box();
        let zone = self.zone();
        let place = *self.rng.pick(&[
            "pump skid",
            "compressor hood",
            "separator area",
            "air inlet",
            "manifold",
        ]);
        vec![self.asset(
            format!("GD-{loop_number}"),
            "GAS_DETECTOR",
            "AUTOMATION",
            format!("Gas detector at {place}"),
            json!({
                "set_point_low_pct_lel": 10,
                "set_point_high_pct_lel": 20,
                "safety_integrity_level": "SIL 2",
                "explosion_protection_zone": zone,
                "junction_box": junction_box,
                "controller": self.safety_controller.clone(),
            }),
        )]
    }

    /// A local pressure gauge: one asset, also used to fill the last slots.
    pub(super) fn gauge(&mut self) -> Vec<Asset> {
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
}
