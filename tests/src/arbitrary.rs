//! proptest strategies shared by the property tests of bad input.

use proptest::prelude::*;
use serde_json::{json, Value};

/// JSON scalars of every kind but strings: null, booleans, any 64-bit integer, any
/// finite float (JSON has no NaN or infinity). Callers add the strings they care about.
pub fn json_non_strings() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}
