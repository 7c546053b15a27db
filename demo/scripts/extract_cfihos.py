#!/usr/bin/env python3
"""Extract the CFIHOS v2.0 tag classes and properties the demo plant uses.

Reads the CFIHOS CORE reference data (Windows-1252 CSV files) and writes
demo/data/cfihos-subset.csv (UTF-8): one row per (tag class, property) the demo
generator (demo/src/plant.rs) uses, with the SYNAPSE asset_type and property key each
maps to. Every class and property named below must exist in CFIHOS, or the script
fails; `attached` says whether CFIHOS attaches the property to the class (directly or
through a parent class) or whether the demo borrows it from the property dictionary.

Usage (from the repo root):
    python3 demo/scripts/extract_cfihos.py [--source DIR] [--out FILE]

The default source is ../shared/data/cfihos beside the repository.
CFIHOS: CC BY 4.0, (c) IOGP JIP36 (see demo/data/README.md).
"""

import argparse
import csv
import pathlib
import sys

# (asset_type, CFIHOS tag class name, discipline, [(property key, CFIHOS property name)])
# Property keys carry their unit, so a rule reads `asset.properties.rated_power_kw > 55`.
CLASSES = [
    # ELECTRICAL
    ("ELECTRIC_MOTOR", "electric motor", "ELECTRICAL", [
        ("rated_power_kw", "rated output power"),
        ("rated_voltage_v", "rated voltage"),
        ("rated_speed_rpm", "rated speed"),
        ("rated_frequency_hz", "rated frequency"),
        ("starting_method", "starting method"),
        ("explosion_protection_zone", "explosion protection zone"),
        ("explosion_rated_item", "explosion rated item"),
    ]),
    ("MOTOR_CONTROL_CENTRE", "motor control centre", "ELECTRICAL", [
        ("rated_voltage_v", "rated voltage"),
        ("rated_current_a", "rated current"),
        ("rated_short_circuit_current_ka", "rated short circuit current"),
        ("rated_frequency_hz", "rated frequency"),
        ("ingress_protection", "ingress protection"),
    ]),
    ("SWITCHBOARD", "switchboard", "ELECTRICAL", [
        ("rated_voltage_v", "rated voltage"),
        ("rated_current_a", "rated current"),
        ("rated_short_circuit_current_ka", "rated short circuit current"),
        ("rated_frequency_hz", "rated frequency"),
    ]),
    ("TRANSFORMER", "transformer", "ELECTRICAL", [
        ("rated_primary_winding_voltage_v", "rated primary winding voltage"),
        ("rated_secondary_winding_voltage_v", "rated secondary winding voltage"),
        ("rated_output_apparent_power_kva", "rated output apparent power"),
        ("thermal_insulation_class", "thermal insulation class"),
    ]),
    ("DISTRIBUTION_BOARD", "distribution board", "ELECTRICAL", [
        ("rated_voltage_v", "rated voltage"),
        ("rated_current_a", "rated current"),
    ]),
    ("UPS_UNIT", "ups unit", "ELECTRICAL", [
        ("rated_output_apparent_power_kva", "rated output apparent power"),
        ("rated_output_voltage_v", "rated output voltage"),
        ("autonomy_time_h", "autonomy time"),
    ]),
    ("VARIABLE_SPEED_DRIVE_UNIT", "variable speed drive unit", "ELECTRICAL", [
        ("rated_power_kw", "rated output power"),
        ("rated_voltage_v", "rated voltage"),
        ("rated_frequency_hz", "rated frequency"),
    ]),
    # MECHANICAL
    ("CENTRIFUGAL_PUMP", "centrifugal pump", "MECHANICAL", [
        ("rated_volume_flow_rate_m3h", "rated volume flow rate"),
        ("rated_operating_differential_pressure_bar", "rated operating differential pressure"),
        ("design_pressure_barg", "upper limit design pressure"),
        ("design_temperature_c", "upper limit design temperature"),
        ("rated_speed_rpm", "rated speed"),
        ("fluid_name", "fluid name"),
        ("driver_type", "driver type"),
    ]),
    ("CENTRIFUGAL_COMPRESSOR", "centrifugal compressor", "MECHANICAL", [
        ("normal_operating_inlet_pressure_bara", "normal operating inlet pressure"),
        ("normal_operating_outlet_pressure_bara", "normal operating outlet pressure"),
        ("normal_operating_mass_flow_rate_kgh", "normal operating mass flow rate"),
        ("fluid_name", "fluid name"),
    ]),
    ("AIR_COOLED_HEAT_EXCHANGER", "air cooled heat exchanger", "MECHANICAL", [
        ("heat_transfer_area_m2", "heat transfer area"),
        ("normal_operating_inlet_temperature_c", "normal operating inlet temperature"),
        ("normal_operating_outlet_temperature_c", "normal operating outlet temperature"),
        ("fluid_name", "fluid name"),
    ]),
    ("FAN", "fan", "MECHANICAL", [
        ("normal_operating_mass_flow_rate_kgh", "normal operating mass flow rate"),
        ("fluid_name", "fluid name"),
    ]),
    ("SHELL_AND_TUBE_HEAT_EXCHANGER", "shell and tube heat exchanger", "MECHANICAL", [
        ("heat_transfer_area_m2", "heat transfer area"),
        ("shell_side_fluid_name", "shell side fluid name"),
        ("tube_side_fluid_name", "tube side fluid name"),
        ("tube_side_normal_operating_inlet_pressure_barg", "tube side normal operating inlet pressure"),
    ]),
    # PROCESS
    ("SEPARATOR", "separator", "PROCESS", [
        ("design_pressure_barg", "upper limit design pressure"),
        ("design_temperature_c", "upper limit design temperature"),
        ("upper_limit_operating_pressure_barg", "upper limit operating pressure"),
        ("fluid_name", "fluid name"),
        ("orientation", "orientation"),
    ]),
    ("KNOCK_OUT_DRUM", "knock out drum", "PROCESS", [
        ("design_pressure_barg", "upper limit design pressure"),
        ("upper_limit_operating_pressure_barg", "upper limit operating pressure"),
        ("fluid_name", "fluid name"),
        ("orientation", "orientation"),
    ]),
    ("CONVENTIONAL_RELIEF_VALVE", "conventional relief valve", "PROCESS", [
        ("set_pressure_barg", "set pressure"),
        ("nominal_inlet_diameter_mm", "nominal inlet diameter"),
        ("nominal_outlet_diameter_mm", "nominal outlet diameter"),
        ("fluid_name", "fluid name"),
    ]),
    # INSTRUMENTATION
    ("PRESSURE_TRANSMITTER", "pressure transmitter", "INSTRUMENTATION", []),
    ("FLOW_TRANSMITTER", "flow transmitter", "INSTRUMENTATION", []),
    ("LEVEL_TRANSMITTER", "level transmitter", "INSTRUMENTATION", []),
    ("TEMPERATURE_TRANSMITTER", "temperature transmitter", "INSTRUMENTATION", []),
    ("PRESSURE_GAUGE", "pressure gauge", "INSTRUMENTATION", [
        ("explosion_protection_zone", "explosion protection zone"),
    ]),
    ("CONTROL_VALVE", "control valve", "INSTRUMENTATION", [
        ("nominal_diameter_mm", "nominal diameter"),
        ("normal_operating_pressure_barg", "normal operating pressure"),
        ("normal_operating_temperature_c", "normal operating temperature"),
        ("failure_action", "failure action"),
        ("input_signal_type", "input signal type"),
        ("fluid_name", "fluid name"),
        ("safety_integrity_level", "safety integrity level"),
    ]),
    ("JUNCTION_BOX", "junction box", "INSTRUMENTATION", [
        ("rated_voltage_v", "rated voltage"),
        ("ingress_protection", "ingress protection"),
        ("explosion_protection_zone", "explosion protection zone"),
    ]),
    # AUTOMATION
    ("PROCESS_DATA_ACQUISITION_AND_CONTROL", "process data acquisition and control", "AUTOMATION", [
        ("explosion_protection_zone", "explosion protection zone"),
    ]),
    ("TERMINATION_PANEL", "termination panel", "AUTOMATION", [
        ("explosion_protection_zone", "explosion protection zone"),
    ]),
    # Fire and gas detection, engineered with the safety instrumented system.
    ("GAS_DETECTOR", "gas detector", "AUTOMATION", [
        ("set_point_low_pct_lel", "set point low"),
        ("set_point_high_pct_lel", "set point high"),
        ("safety_integrity_level", "safety integrity level"),
        ("explosion_protection_zone", "explosion protection zone"),
    ]),
]

# Every transmitter carries the same measurement properties.
TRANSMITTER_PROPERTIES = [
    ("measuring_range_min", "calibration range"),
    ("measuring_range_max", "calibration range"),
    ("measuring_range_unit", "calibration range"),
    ("output_signal_type", "output signal type"),
    ("safety_integrity_level", "safety integrity level"),
    ("explosion_protection_zone", "explosion protection zone"),
]

# CFIHOS "SI unit of measure" names, shortened as they appear in property keys.
UNIT_SYMBOLS = {
    "kilowatt": "kW", "volt": "V", "revolution per minute": "rpm", "hertz": "Hz",
    "ampere": "A", "kiloampere": "kA", "kilovolt-ampere": "kVA", "hour": "h",
    "cubic metre per hour": "m3/h", "bar": "bar", "bar gauge": "barg",
    "bar absolute": "bara", "degree celsius": "degC", "kilogram per hour": "kg/h",
    "square metre": "m2", "millimetre": "mm",
}

COLUMNS = [
    "asset_type", "discipline", "tag_class_code", "tag_class_name", "parent_tag_class_name",
    "property_key", "property_code", "property_name", "property_data_type",
    "unit_dimension", "si_unit", "attached",
]


def read(path):
    # CFIHOS ships Windows-1252; the extract is UTF-8.
    with open(path, encoding="cp1252", newline="") as handle:
        return list(csv.DictReader(handle))


def main():
    repo = pathlib.Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, default=repo.parent / "shared" / "data" / "cfihos")
    parser.add_argument("--out", type=pathlib.Path, default=repo / "demo" / "data" / "cfihos-subset.csv")
    args = parser.parse_args()

    classes = {r["tag class name"]: r for r in read(args.source / "CFIHOS CORE tag class v2.0.csv")}
    properties = {r["property name"]: r for r in read(args.source / "CFIHOS CORE property v2.0.csv")}
    class_properties = {}
    for row in read(args.source / "CFIHOS CORE tag class property v2.0.csv"):
        class_properties.setdefault(row["tag class name"], {})[row["property name"]] = row

    def ancestry(name):
        # The root class names itself as its parent: stop at the first repeat.
        seen = set()
        while name in classes and name not in seen:
            seen.add(name)
            yield name
            name = classes[name]["parent tag class name"]

    def si_unit(class_name, property_name):
        for ancestor in ancestry(class_name):
            row = class_properties.get(ancestor, {}).get(property_name)
            if row is not None:
                return True, row["SI unit of measure name"]
        return False, ""

    rows = []
    errors = []
    for asset_type, class_name, discipline, props in CLASSES:
        tag_class = classes.get(class_name)
        if tag_class is None:
            errors.append(f"tag class not in CFIHOS: {class_name}")
            continue
        if asset_type.endswith("_TRANSMITTER"):
            props = props + TRANSMITTER_PROPERTIES
        for key, property_name in props:
            prop = properties.get(property_name)
            if prop is None:
                errors.append(f"property not in CFIHOS: {property_name}")
                continue
            attached, unit = si_unit(class_name, property_name)
            rows.append({
                "asset_type": asset_type,
                "discipline": discipline,
                "tag_class_code": tag_class["CFIHOS unique code"],
                "tag_class_name": class_name,
                "parent_tag_class_name": tag_class["parent tag class name"],
                "property_key": key,
                "property_code": prop["CFIHOS unique code"],
                "property_name": property_name,
                "property_data_type": prop["property data type"],
                "unit_dimension": prop["unit of measure dimension code"],
                "si_unit": UNIT_SYMBOLS.get(unit, unit),
                "attached": "yes" if attached else "no",
            })
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows for {len(CLASSES)} tag classes to {args.out}")


if __name__ == "__main__":
    main()
