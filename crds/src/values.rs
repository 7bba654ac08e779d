//! Small value types of the API: secrets that redact themselves, durations,
//! byte sizes and money, each parsed once from the user's string.

use std::fmt;
use std::time::Duration;

/// A secret value. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call only where it leaves the process (an upstream
    /// header) or is hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses `500ms`, `60s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like `500ms`, `60s` or `5m` ({e})"))?;
    if duration.is_zero() {
        return Err(format!("`{text}`: a duration must be greater than zero"));
    }
    Ok(duration)
}

/// Parses a byte size: `1048576`, `512KiB`, `32MiB`, `1GiB`, `10MB`, `64kb`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let bad = || format!("`{text}` is not a size like `32MiB`, `512KiB` or `1048576`");
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(bad)
}

/// Money as an integer count of micro-dollars (1e-6 USD), so sums are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    /// Parses a non-negative decimal string in USD with at most 6 decimals:
    /// `"12.50"`, `"0.000150"`, `"100"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an amount in USD like \"12.50\"");
        let trimmed = text.trim();
        let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > 6 {
            return Err(format!("`{text}`: at most 6 decimal places"));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut frac_micro: u64 = 0;
        for (i, digit) in frac.bytes().enumerate() {
            frac_micro += u64::from(digit - b'0') * 10u64.pow(5 - i as u32);
        }
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac_micro))
            .map(MicroUsd)
            .ok_or_else(bad)
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("big").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn money() {
        assert_eq!(MicroUsd::parse("12.50"), Ok(MicroUsd(12_500_000)));
        assert_eq!(MicroUsd::parse("0.000150"), Ok(MicroUsd(150)));
        assert_eq!(MicroUsd::parse("100"), Ok(MicroUsd(100_000_000)));
        assert_eq!(MicroUsd(12_500_000).to_string(), "12.500000");
        assert!(MicroUsd::parse("-1").is_err());
        assert!(MicroUsd::parse("1.0000001").is_err());
        assert!(MicroUsd::parse("abc").is_err());
        assert!(MicroUsd::parse(".").is_err());
    }
}
