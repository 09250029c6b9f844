//! Durations as people write them in YAML: `"500ms"`, `"10s"`, `"5m"`, `"1h30m"` (Go's syntax,
//! so hsu-master-go configs read the same). A bare number is refused: `timeout: 10` is ambiguous.

use std::fmt;
use std::time::Duration;

use serde::{de, Deserializer, Serializer};

/// Why a text is not a duration. Each names the text and, where it helps, the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing written.
    #[error("empty duration; write e.g. \"10s\"")]
    Empty,
    /// A unit where a number should be.
    #[error("invalid duration {text:?}: expected a number at {at:?}")]
    ExpectedNumber {
        /// The text.
        text: String,
        /// What follows where the number should start.
        at: String,
    },
    /// Digits and dots that are not a number (`1.2.3`).
    #[error("invalid duration {text:?}: bad number {number:?}")]
    BadNumber {
        /// The text.
        text: String,
        /// The part that is not a number.
        number: String,
    },
    /// A number without a unit (`10`).
    #[error("invalid duration {text:?}: missing unit (write \"{number}s\" or \"{number}ms\")")]
    MissingUnit {
        /// The text.
        text: String,
        /// The number.
        number: String,
    },
    /// A unit hsu does not know.
    #[error("invalid duration {text:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h, d)")]
    UnknownUnit {
        /// The text.
        text: String,
        /// The unit.
        unit: String,
    },
    /// More than about 31,000 years.
    #[error("invalid duration {text:?}: too large")]
    TooLarge {
        /// The text.
        text: String,
    },
}

/// Parses `"1h30m"`, `"1h 30m"`, `"250ms"`, `"1.5s"`, `"2d"`. Units: `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h`, `d` (24 hours); parts may be separated by spaces.
///
/// # Errors
/// [`DurationError`] saying what is wrong with `text`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        // Parts may be spaced: `1h 30m`.
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError::ExpectedNumber {
                text: text.to_string(),
                at: rest.to_string(),
            });
        }
        let number_text = &rest[..num_len];
        let number: f64 = number_text.parse().map_err(|_| DurationError::BadNumber {
            text: text.to_string(),
            number: number_text.to_string(),
        })?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(DurationError::MissingUnit {
                    text: text.to_string(),
                    number: number_text.to_string(),
                })
            }
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        total += number * seconds;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(DurationError::TooLarge {
            text: text.to_string(),
        });
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way [`parse`] reads it (`"1m30s"`, `"250ms"`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string such as \"500ms\", \"10s\" or \"5m\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a bare number ({v}) is ambiguous as a duration; write \"{v}s\" or \"{v}ms\""
        )))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        self.visit_u64(v.unsigned_abs())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a bare number ({v}) is ambiguous as a duration; write \"{v}s\""
        )))
    }
}

/// serde `deserialize_with` for a `Duration` field.
///
/// # Errors
/// When the value is not a duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Visitor)
}

/// serde `serialize_with` for a `Duration` field.
///
/// # Errors
/// Only the serializer's own.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// The same for `Option<Duration>` fields.
pub mod option {
    use super::*;

    /// serde `deserialize_with` for an `Option<Duration>` field.
    ///
    /// # Errors
    /// When the value is not a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }

    /// serde `serialize_with` for an `Option<Duration>` field.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_may_be_spaced_and_days_are_24_hours() {
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse(" 2d 1s ").unwrap(),
            Duration::from_secs(2 * 86400 + 1)
        );
        assert_eq!(parse("1.5d").unwrap(), Duration::from_secs(129600));
        assert!(parse("1 h").is_err(), "a unit belongs to its number");
        assert!(parse("10 ").is_err(), "a number still needs its unit");
        let e = parse("3w").unwrap_err().to_string();
        assert!(e.contains("(use ns, us, ms, s, m, h, d)"), "{e}");
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        assert!(parse("10")
            .unwrap_err()
            .to_string()
            .contains("missing unit"));
        assert!(parse("10w")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "10s", "1m30s", "2h", "0s", "1500us"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
