//! An area's electrical and control infrastructure, built before its equipment.

use serde_json::json;

use super::{Area, LV_VOLTAGE, MV_VOLTAGE};
use crate::plant::Asset;

impl Area<'_> {
    /// Switchboards, transformer, MCCs, distribution boards, UPS, controllers,
    /// marshalling panels and junction boxes, sized for `budget` assets, each after
    /// whatever it references.
    pub(super) fn infrastructure(&mut self, budget: usize) -> Vec<Asset> {
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
        self.safety_controller = controllers[1].clone();
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
}
