//! `depends_on:` of a worker: which workers must reach which condition before it starts.
//!
//! Two spellings, as in docker compose and process-compose:
//!
//! ```yaml
//! depends_on: [db, cache]            # each must be running (`started`)
//! depends_on:
//!   db: healthy                      # started | healthy | completed_successfully
//!   migrate: completed_successfully
//!   api: {log_line: "listening on"}  # a line of its output (or a module's tracing) matches
//!   cache: {condition: started, timeout: 30s}
//! ```
//!
//! process-compose's names (`process_started`, `process_healthy`,
//! `process_completed_successfully`) are accepted as the same conditions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What a dependency must reach before the dependent starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    /// It is running (`started`).
    Started,
    /// It passed a health check in its current run (`healthy`): for an integrated process its
    /// first Ping, for a module its first `is_healthy`, otherwise its `health_check:` probe.
    Healthy,
    /// It ran and exited with status 0 on its own, e.g. a migration job
    /// (`completed_successfully`).
    CompletedSuccessfully,
    /// A line of its current run's output (a module: its tracing events) matched this regular
    /// expression (`log_line: REGEX`).
    LogLine(String),
}

impl Condition {
    /// The name used in YAML and in messages: `healthy`, `log_line "ready"`.
    pub fn describe(&self) -> String {
        match self {
            Self::Started => "started".into(),
            Self::Healthy => "healthy".into(),
            Self::CompletedSuccessfully => "completed_successfully".into(),
            Self::LogLine(p) => format!("log_line {p:?}"),
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "started" | "process_started" => Self::Started,
            "healthy" | "process_healthy" => Self::Healthy,
            "completed_successfully" | "process_completed_successfully" => {
                Self::CompletedSuccessfully
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

const CONDITIONS: &[&str] = &["started", "healthy", "completed_successfully"];

/// One entry of `depends_on:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// What the dependency must reach.
    pub condition: Condition,
    /// Give up waiting after this long: the dependent fails to start, naming what it waited for
    /// (its restart policy then applies). None: wait as long as it takes.
    pub timeout: Option<Duration>,
}

impl Dependency {
    /// `condition` with no timeout.
    pub fn on(condition: Condition) -> Self {
        Self {
            condition,
            timeout: None,
        }
    }
}

/// The long form: `{condition: healthy, timeout: 30s}` or `{log_line: "ready"}`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LongForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_line: Option<String>,
    #[serde(
        default,
        with = "super::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    timeout: Option<Duration>,
}

impl<'de> Deserialize<'de> for Dependency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dependency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a condition (started, healthy, completed_successfully) or a map with `condition` or `log_line` and an optional `timeout`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dependency, E> {
                Condition::from_name(v)
                    .map(Dependency::on)
                    .ok_or_else(|| E::unknown_variant(v, CONDITIONS))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Dependency, E> {
                // `db:` with nothing after it: the default condition.
                Ok(Dependency::on(Condition::Started))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Dependency, A::Error> {
                let long = LongForm::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let condition = match (long.condition.as_deref(), long.log_line) {
                    (Some(_), Some(_)) => {
                        return Err(de::Error::custom(
                            "give either `condition` or `log_line`, not both (`log_line` is a condition)",
                        ))
                    }
                    (None, Some(pattern)) => Condition::LogLine(pattern),
                    (Some("log_line"), None) => {
                        return Err(de::Error::custom(
                            "write the pattern as `log_line: REGEX` instead of `condition: log_line`",
                        ))
                    }
                    (Some(name), None) => Condition::from_name(name)
                        .ok_or_else(|| de::Error::unknown_variant(name, CONDITIONS))?,
                    (None, None) => Condition::Started,
                };
                Ok(Dependency {
                    condition,
                    timeout: long.timeout,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dependency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.condition, self.timeout) {
            (Condition::LogLine(_), _) | (_, Some(_)) => {
                let (condition, log_line) = match &self.condition {
                    Condition::LogLine(p) => (None, Some(p.clone())),
                    other => (Some(other.describe()), None),
                };
                LongForm {
                    condition,
                    log_line,
                    timeout: self.timeout,
                }
                .serialize(s)
            }
            (c, None) => s.serialize_str(&c.describe()),
        }
    }
}

/// `depends_on:` as a map from worker id to dependency; a list of ids means `started` each.
pub type DependsOn = BTreeMap<String, Dependency>;

/// `deserialize_with` for `depends_on:`: a list of ids or a map.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DependsOn, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = DependsOn;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of worker ids, or a map from worker id to a condition")
        }
        fn visit_unit<E: de::Error>(self) -> Result<DependsOn, E> {
            Ok(DependsOn::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DependsOn, A::Error> {
            let mut out = DependsOn::new();
            while let Some(id) = seq.next_element::<String>()? {
                if out
                    .insert(id.clone(), Dependency::on(Condition::Started))
                    .is_some()
                {
                    return Err(de::Error::custom(format!("`{id}` is listed twice")));
                }
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DependsOn, A::Error> {
            let mut out = DependsOn::new();
            while let Some((id, dep)) = map.next_entry::<String, Dependency>()? {
                if out.insert(id.clone(), dep).is_some() {
                    return Err(de::Error::custom(format!("`{id}` is listed twice")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// A validated `log_line:` pattern: compiled once, compared by its text.
#[derive(Clone)]
pub struct LinePattern(regex::Regex);

impl LinePattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// The regex error.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        regex::RegexBuilder::new(pattern)
            // A config's pattern is small; a huge compiled program is a mistake.
            .size_limit(1 << 20)
            .build()
            .map(Self)
    }

    /// Whether `line` matches.
    pub fn is_match(&self, line: &[u8]) -> bool {
        match std::str::from_utf8(line) {
            Ok(text) => self.0.is_match(text),
            Err(_) => self.0.is_match(&String::from_utf8_lossy(line)),
        }
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for LinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for LinePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DependsOn, String> {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "deserialize")]
            depends_on: DependsOn,
        }
        serde_yaml::from_str::<W>(yaml)
            .map(|w| w.depends_on)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn both_spellings_and_every_condition() {
        let d = parse("depends_on: [db, cache]").unwrap();
        assert_eq!(d["db"], Dependency::on(Condition::Started));
        assert_eq!(d.len(), 2);
        let d = parse(
            "depends_on:\n  db: healthy\n  job: process_completed_successfully\n  api: {log_line: 'listening on \\d+'}\n  c: {condition: started, timeout: 30s}\n  e:\n",
        )
        .unwrap();
        assert_eq!(d["db"].condition, Condition::Healthy);
        assert_eq!(d["job"].condition, Condition::CompletedSuccessfully);
        assert_eq!(
            d["api"].condition,
            Condition::LogLine("listening on \\d+".into())
        );
        assert_eq!(d["c"].timeout, Some(Duration::from_secs(30)));
        assert_eq!(d["e"].condition, Condition::Started);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("depends_on: {db: healthyy}").unwrap_err();
        assert!(e.contains("unknown variant `healthyy`"), "{e}");
        assert!(e.contains("completed_successfully"), "{e}");
        let e = parse("depends_on: {db: {condition: healthy, log_line: x}}").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("depends_on: {db: {conditon: healthy}}").unwrap_err();
        assert!(e.contains("unknown field `conditon`"), "{e}");
        let e = parse("depends_on: [db, db]").unwrap_err();
        assert!(e.contains("`db` is listed twice"), "{e}");
        let e = parse("depends_on: {db: {timeout: 10}}").unwrap_err();
        assert!(e.contains("a bare number (10) is ambiguous"), "{e}");
    }

    #[test]
    fn round_trips_through_yaml() {
        let d = parse(
            "depends_on: {db: healthy, api: {log_line: ready}, c: {condition: started, timeout: 1m}}",
        )
        .unwrap();
        let text = serde_yaml::to_string(&d).unwrap();
        assert_eq!(
            parse(&format!("depends_on:\n{}", indent(&text))).unwrap(),
            d
        );
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("  {l}\n")).collect()
    }
}
