//! The value types a flag and its file key share: each parses with one `FromStr` and prints
//! with one `Display`, so a value is refused with the same reason whichever layer gave it, and a
//! default reads in `--help` as it would be typed. [`text`] carries the same rule into serde for
//! the layers' merge.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration that may be `off` (`--bus-max-age`, `--outbox-stale-after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub Option<Duration>);

impl FromStr for MaxAge {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        parse_age(raw)
    }
}

impl fmt::Display for MaxAge {
    /// The largest unit that divides the duration exactly: `60s` is `1m`, `86400s` is `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(age) = self.0 else {
            return f.write_str("off");
        };
        let seconds = age.as_secs();
        let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(size, _)| seconds % size == 0 && seconds > 0)
            .map_or((seconds, "s"), |(size, unit)| (seconds / size, unit));
        write!(f, "{n}{unit}")
    }
}

/// Parses `30s`, `15m`, `24h`, `7d` or `off`.
///
/// # Errors
/// A sentence naming what is wrong.
pub fn parse_age(raw: &str) -> Result<MaxAge, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(MaxAge(None));
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 30s, 15m, 24h, 7d or off"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit is s, m, h or d")),
    };
    if n == 0 {
        return Err("a duration of zero is not allowed; use off instead".into());
    }
    Ok(MaxAge(Some(Duration::from_secs(n.saturating_mul(seconds)))))
}

/// A number, or `off` for none (`--rate-limit`, `--quota-journeys`, `--quota-outbox-share`). In
/// the file either a TOML number or a string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrOff<T> {
    /// `off`.
    Off,
    /// A value.
    On(T),
}

impl<T> OrOff<T> {
    /// The value, `None` for `off`.
    pub fn value(self) -> Option<T> {
        match self {
            Self::Off => None,
            Self::On(v) => Some(v),
        }
    }
}

impl<T: fmt::Display> fmt::Display for OrOff<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On(v) => v.fmt(f),
        }
    }
}

impl<T: FromStr> FromStr for OrOff<T> {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        if raw.trim().eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        raw.trim()
            .parse()
            .map(Self::On)
            .map_err(|_| format!("{raw:?} is neither a number nor off"))
    }
}

impl<'de, T: FromStr> Deserialize<'de> for OrOff<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberOrOff<T>(std::marker::PhantomData<T>);
        impl<T: FromStr> Visitor<'_> for NumberOrOff<T> {
            type Value = OrOff<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or \"off\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(NumberOrOff(std::marker::PhantomData))
    }
}

impl<T: fmt::Display> Serialize for OrOff<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `on` or `off` (`--cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Served.
    On,
    /// Removed.
    Off,
}

impl FromStr for Switch {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is neither on nor off")),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

impl Serialize for MaxAge {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        text::deserialize(deserializer)
    }
}

/// Serde for a value that is its text: written with `Display`, read from a string with the
/// `FromStr` its flag uses (`#[serde(with = "text")]`, or [`text::option`] for an `Option`), for
/// the types this crate does not own (a strategy, an fsync policy, a layout).
pub mod text {
    use std::fmt;
    use std::str::FromStr;

    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    /// Writes `value` as its `Display` text.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<T: fmt::Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    /// Reads a string and parses it with `T`'s `FromStr`.
    ///
    /// # Errors
    /// Not a string, or the `FromStr` error, which the layers report with the key (and the
    /// file's line).
    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: fmt::Display,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }

    /// The same for an optional value (absent: `None`).
    pub mod option {
        use super::{Deserialize, Deserializer, FromStr, Serializer, de, fmt};

        /// Writes the value's text, or nothing.
        ///
        /// # Errors
        /// The serializer's.
        pub fn serialize<T: fmt::Display, S: Serializer>(
            value: &Option<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.collect_str(value),
                None => serializer.serialize_none(),
            }
        }

        /// Reads an optional string and parses it.
        ///
        /// # Errors
        /// As [`super::deserialize`].
        pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
        where
            D: Deserializer<'de>,
            T: FromStr,
            T::Err: fmt::Display,
        {
            Option::<String>::deserialize(deserializer)?
                .map(|text| text.parse().map_err(de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_numbers_and_switches_parse_one_way() {
        assert_eq!(parse_age("15m"), Ok(MaxAge(Some(Duration::from_secs(900)))));
        assert_eq!(parse_age("off"), Ok(MaxAge(None)));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("5y").is_err());
        assert_eq!("off".parse::<OrOff<u32>>(), Ok(OrOff::Off));
        assert_eq!("12".parse::<OrOff<u32>>(), Ok(OrOff::On(12)));
        assert!("twelve".parse::<OrOff<u32>>().is_err());
        assert_eq!("off".parse::<Switch>(), Ok(Switch::Off));
        assert!("maybe".parse::<Switch>().is_err());
    }

    /// What `--help` prints as a default is what the option parses back.
    #[test]
    fn each_value_reads_back_its_own_text() {
        for raw in ["60s", "90s", "15m", "1h", "36h", "1d", "7d", "off"] {
            let age = parse_age(raw).expect(raw);
            assert_eq!(parse_age(&age.to_string()), Ok(age), "{raw}");
        }
        assert_eq!(MaxAge(Some(Duration::from_secs(3600))).to_string(), "1h");
        assert_eq!(MaxAge(Some(Duration::from_secs(90))).to_string(), "90s");
        for value in [OrOff::On(0.25), OrOff::Off] {
            assert_eq!(value.to_string().parse::<OrOff<f64>>(), Ok(value));
        }
        for value in [Switch::On, Switch::Off] {
            assert_eq!(value.to_string().parse::<Switch>(), Ok(value));
        }
    }

    #[test]
    fn a_number_or_off_reads_toml_numbers_and_strings() {
        #[derive(Deserialize)]
        struct T {
            a: OrOff<u64>,
            b: OrOff<f64>,
            c: OrOff<u64>,
        }
        let t: T = toml::from_str("a = 5\nb = 0.5\nc = \"off\"\n").expect("toml");
        assert_eq!((t.a, t.b, t.c), (OrOff::On(5), OrOff::On(0.5), OrOff::Off));
        let err = toml::from_str::<T>("a = true\nb = 1\nc = 1\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("boolean"), "{err}");
    }
}
