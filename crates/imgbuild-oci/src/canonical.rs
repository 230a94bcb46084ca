//! Canonical JSON: the one serialization of every JSON blob imgbuild writes.
//!
//! oci-spec keeps labels and annotations in `HashMap`s, whose iteration order changes from run
//! to run, and serde_json's `preserve_order` feature (switched on by other crates in the build)
//! keeps whatever order it is given. Sorting every object's keys makes the bytes, and so the
//! digests, a function of the content alone.

use serde::Serialize;
use serde_json::{Map, Value};

/// Serialize `value` with every object's keys in byte order and no insignificant whitespace.
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = sort_keys(serde_json::to_value(value)?);
    serde_json::to_vec(&value)
}

fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut sorted = Map::new();
            for (k, v) in entries {
                sorted.insert(k, sort_keys(v));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn hash_map_order_does_not_leak() {
        let mut outputs = std::collections::BTreeSet::new();
        for rotation in 0..20 {
            // The same 30 entries, inserted in a different order each time.
            let mut m = HashMap::new();
            for k in 0..30 {
                let key = (k + rotation) % 30;
                m.insert(format!("key{key}"), key);
            }
            outputs.insert(super::to_canonical_json(&m).unwrap());
        }
        assert_eq!(outputs.len(), 1);
        let one = outputs.into_iter().next().unwrap();
        assert!(String::from_utf8(one)
            .unwrap()
            .starts_with(r#"{"key0":0,"key1":1,"key10":10"#));
    }
}
