//! Rotating and static equipment: motors (with VFDs), pump sets, vessels with their
//! relief valves, compressors, air coolers with fans, heat exchangers.

use serde_json::json;

use super::{
    capitalise, motor_rating, Area, GAS_FLUIDS, LV_VOLTAGE, MV_VOLTAGE, PUMP_FLUIDS, PUMP_SERVICES,
    PUMP_WITHOUT_MOTOR,
};
use crate::plant::Asset;

impl Area<'_> {
    /// A motor on the right MCC, its VFD when it has one (after the motor).
    pub(super) fn motor(
        &mut self,
        tag: String,
        driven: &str,
        power_kw: f64,
        speed_rpm: u32,
    ) -> Vec<Asset> {
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
    pub(super) fn pump_set(&mut self) -> Vec<Asset> {
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

    /// A separator or knock-out drum, its relief valve and its level loop.
    pub(super) fn vessel(&mut self) -> Vec<Asset> {
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
    pub(super) fn compressor(&mut self) -> Vec<Asset> {
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
    pub(super) fn air_cooler(&mut self) -> Vec<Asset> {
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

    pub(super) fn heat_exchanger(&mut self) -> Vec<Asset> {
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
}
