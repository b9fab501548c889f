//! Exact money.
//!
//! Prices are decimals with at most two decimal places (whole cents) and fewer than twelve
//! integer digits. The bound is deliberate: fourteen significant digits is what Redis' cjson keeps
//! when a Lua script re-encodes a number, so every valid price survives the `lua` strategy
//! exactly. Prices always serialize with two decimals (`850.50`, `1250.00`), as a JSON number.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::input::InvalidInput;

/// A non-negative amount with whole cents, below 10^12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = f64, example = 850.50)
)]
pub struct Money(Decimal);

/// Amounts must stay below this; see the module docs for why.
const LIMIT: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0); // 10^12

impl Money {
    /// Validates a decimal amount.
    ///
    /// # Errors
    /// [`InvalidInput`] when the amount is negative, has fractions of a cent, or is 10^12 or more.
    pub fn new(amount: Decimal) -> Result<Self, InvalidInput> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(InvalidInput::new("price", format!("{amount} is negative")));
        }
        if amount.normalize().scale() > 2 {
            return Err(InvalidInput::new(
                "price",
                format!("{amount} has fractions of a cent"),
            ));
        }
        if amount >= LIMIT {
            return Err(InvalidInput::new(
                "price",
                format!("{amount} is not below 10^12"),
            ));
        }
        let mut cents = amount.normalize();
        cents.rescale(2);
        Ok(Self(cents))
    }

    /// An amount from a whole number of cents.
    ///
    /// # Errors
    /// [`InvalidInput`] when `cents` is negative or the amount is 10^12 or more.
    pub fn from_cents(cents: i64) -> Result<Self, InvalidInput> {
        Self::new(Decimal::new(cents, 2))
    }

    /// The amount in integer cents, exactly.
    pub fn cents(self) -> i64 {
        // Two decimals and below 10^12 by construction: the mantissa is the cent count and fits.
        i64::try_from(self.0.mantissa()).unwrap_or(i64::MAX)
    }

    /// The amount as a decimal.
    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::arbitrary_precision::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A JSON number only (not a string), read from its exact text, and judged on that text
        // before any parsing: a decimal parse rounds past 28 significant digits, so
        // `850.50000000000000000000000000001` would become a valid 850.50.
        let number = serde_json::Number::deserialize(d)?;
        let text = number.as_str();
        let shown = quoted(text);
        let Some(digits) = Digits::of(text) else {
            return Err(serde::de::Error::custom(format!(
                "price {shown} is not a decimal number"
            )));
        };
        if digits.decimals > 2 {
            return Err(serde::de::Error::custom(format!(
                "price {shown} has fractions of a cent"
            )));
        }
        if digits.integer > 12 {
            return Err(serde::de::Error::custom(format!(
                "price {shown} is not below 10^12"
            )));
        }
        let amount = text
            .parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(text))
            .map_err(|e| serde::de::Error::custom(format!("price {shown}: {e}")))?;
        Self::new(amount).map_err(serde::de::Error::custom)
    }
}

/// At most this much of what a client sent is quoted back in an error.
const QUOTED: usize = 32;

/// `text` as an error quotes it: whole when short, else its start and its length.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}… ({} characters)", &text[..at], text.chars().count()),
    }
}

/// What a number's text says of its size and precision, exactly, whatever its notation.
struct Digits {
    /// Decimal places once trailing zeros are dropped (negative for a whole number of tens).
    decimals: i64,
    /// Digits before the decimal point once leading zeros are dropped.
    integer: i64,
}

impl Digits {
    fn of(text: &str) -> Option<Self> {
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().ok()?),
            None => (unsigned, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if whole.is_empty()
            || !whole
                .chars()
                .chain(fraction.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let fraction_len = i64::try_from(fraction.len()).ok()?;
        let all = format!("{whole}{fraction}");
        let significant = all.trim_start_matches('0');
        let trailing =
            i64::try_from(significant.len() - significant.trim_end_matches('0').len()).ok()?;
        let decimals = fraction_len.checked_sub(exponent)?.checked_sub(trailing)?;
        let integer = if significant.is_empty() {
            0
        } else {
            i64::try_from(significant.len())
                .ok()?
                .checked_sub(fraction_len)?
                .checked_add(exponent)?
        };
        Some(Self { decimals, integer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("850.50", "850.50", 85050)]
    #[case("850.5", "850.50", 85050)]
    #[case("1250", "1250.00", 125000)]
    #[case("0.1", "0.10", 10)]
    #[case("1234567.89", "1234567.89", 123456789)]
    #[case("1.5e2", "150.00", 15000)]
    #[case("850.500", "850.50", 85050)]
    #[case("8.505E2", "850.50", 85050)]
    #[case("0.00", "0.00", 0)]
    fn serializes_with_two_decimals(#[case] json: &str, #[case] out: &str, #[case] cents: i64) {
        let money: Money = serde_json::from_str(json).expect("valid price");
        assert_eq!(serde_json::to_string(&money).expect("serialize"), out);
        assert_eq!(money.cents(), cents);
    }

    #[rstest]
    #[case("-1.00")]
    #[case("0.001")]
    #[case("1000000000000")]
    #[case("\"12\"")]
    // Past 28 significant digits a decimal parse rounds: judged on the text, before it.
    #[case("850.50000000000000000000000000001")]
    #[case("0.00000000000000000000000000001")]
    #[case("8.50501e2")]
    #[case("1e12")]
    #[case("1.000000000000000000000000000001e2")]
    fn rejects_invalid_amounts(#[case] json: &str) {
        assert!(
            serde_json::from_str::<Money>(json).is_err(),
            "{json} accepted"
        );
    }

    /// The limit is ten to the twelfth, exclusive: the largest amount below it is accepted,
    /// the limit itself is not.
    #[test]
    fn the_largest_amount_is_just_below_ten_to_the_twelfth() {
        let largest: Money = serde_json::from_str("999999999999.99").expect("accepted");
        assert_eq!(largest.cents(), 99_999_999_999_999);
        assert!(serde_json::from_str::<Money>("1000000000000.00").is_err());
        assert!(Money::from_cents(100_000_000_000_000).is_err());
    }

    proptest! {
        #[test]
        fn cents_round_trip(cents in 0i64..100_000_000_000_000) {
            let money = Money::from_cents(cents).expect("in range");
            prop_assert_eq!(money.cents(), cents);
            let back: Money = serde_json::from_str(&serde_json::to_string(&money).expect("ser")).expect("de");
            prop_assert_eq!(back, money);
        }
    }

    /// The amount and its text are the decimal itself; an error quotes a long number by its
    /// start and length, a short one whole.
    #[test]
    fn the_amount_its_text_and_how_errors_quote_it() {
        let money: Money = serde_json::from_str("850.5").expect("test data");
        assert_eq!(money.amount(), Decimal::new(85050, 2));
        assert_eq!(money.to_string(), "850.50");
        assert_eq!(quoted("12.345"), "12.345");
        let long = format!("1.{}", "0".repeat(40));
        assert_eq!(
            quoted(&long),
            format!("1.{}… (42 characters)", "0".repeat(30))
        );
    }

    /// A number's text needs digits before its point, and digits only.
    #[test]
    fn digits_need_a_whole_part_of_digits() {
        assert!(Digits::of(".5").is_none());
        assert!(Digits::of("1x.5").is_none());
        assert!(Digits::of("1.5").is_some());
    }
}
