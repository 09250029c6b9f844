//! The JSON Schema of a config file (`hsu schema`), for editor completion and checks: derived
//! from the same serde types that read the file, with hand-written schemas only where the YAML
//! takes a text with its own grammar (durations, sizes, signals) or more than one shape
//! (`depends_on`, `env_file`, a dependency).

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::HsuConfig;

/// The schema of a whole config file, as JSON.
pub fn config_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(HsuConfig);
    schema.insert(
        "title".into(),
        serde_json::Value::String("hsu config".into()),
    );
    schema.to_value()
}

/// A duration as the YAML writes it: `500ms`, `10s`, `1h 30m`, `2d`.
pub(super) struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: numbers with units ns, us, ms, s, m, h, d, e.g. \"500ms\", \"10s\", \"1h 30m\". A bare number is refused.",
            "pattern": r"^\s*(0|([0-9]+(\.[0-9]+)?\s*(ns|us|µs|ms|s|m|h|d)\s*)+)$"
        })
    }
}

/// A size: `10MiB` (1024-based), `10MB` (1000-based), or a number of bytes.
impl JsonSchema for super::ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: KB, MB, GB are 1000-based, KiB, MiB, GiB 1024-based (\"512MiB\"), or a number of bytes.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(B|K|KB|KiB|M|MB|MiB|G|GB|GiB)?\s*$"}
            ]
        })
    }
}

impl JsonSchema for super::Signal {
    fn schema_name() -> Cow<'static, str> {
        "Signal".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A signal by name, with or without SIG, any case: TERM, INT, QUIT, HUP, KILL, USR1, USR2.",
            "pattern": "^\\s*([Ss][Ii][Gg])?([Tt][Ee][Rr][Mm]|[Ii][Nn][Tt]|[Qq][Uu][Ii][Tt]|[Hh][Uu][Pp]|[Kk][Ii][Ll][Ll]|[Uu][Ss][Rr][12])\\s*$"
        })
    }
}

/// Any YAML value (a module's own `config:`).
pub(super) struct AnyValue;

impl JsonSchema for AnyValue {
    fn schema_name() -> Cow<'static, str> {
        "AnyValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"description": "Free-form: the module's or process's own settings."})
    }
}

/// `env_file:`: one path or a list.
pub(super) struct OneOrManyPaths;

impl JsonSchema for OneOrManyPaths {
    fn schema_name() -> Cow<'static, str> {
        "EnvFiles".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A file of KEY=VALUE lines, or a list of them (relative to the config file).",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// `depends_on:`: a list of worker ids (each `started`) or a map from id to condition.
pub(super) struct DependsOnSchema;

impl JsonSchema for DependsOnSchema {
    fn schema_name() -> Cow<'static, str> {
        "DependsOn".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let condition = json_schema!({
            "type": "string",
            "enum": ["started", "healthy", "completed_successfully", "process_started", "process_healthy", "process_completed_successfully"]
        });
        json_schema!({
            "description": "Workers that must reach a condition before this one starts.",
            "anyOf": [
                {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                {"type": "object", "additionalProperties": {
                    "anyOf": [
                        condition.clone(),
                        {"type": "null"},
                        {"type": "object", "additionalProperties": false, "properties": {
                            "condition": condition,
                            "log_line": {"type": "string", "description": "A regular expression a line of its output must match."},
                            "timeout": {"$ref": "#/$defs/Duration"}
                        }}
                    ]
                }}
            ]
        })
    }
}
