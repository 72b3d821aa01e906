//! The duration strings the API accepts (`500ms`, `30s`, `2m`, `1h30m`,
//! `0`), parsed into milliseconds — the unit PostgreSQL's timeouts and the
//! connection Secret's `*_MS` keys use.

/// Why a duration string is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration such as 500ms, 30s, 2m, 1h30m, or 0")]
pub struct DurationError {
    pub value: String,
}

/// Milliseconds in `value`, which must match [`super::common::DURATION_PATTERN`].
/// Values beyond PostgreSQL's `int` milliseconds (about 24.8 days) are refused.
pub fn parse_millis(value: &str) -> Result<i64, DurationError> {
    let error = || DurationError {
        value: value.to_owned(),
    };
    if value == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let mut rest = value;
    if rest.is_empty() {
        return Err(error());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
        if digits == 0 {
            return Err(error());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(error());
        };
        rest = &rest[len..];
        total = number
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(error)?;
    }
    if total > i64::from(i32::MAX) {
        return Err(error());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_millis("0"), Ok(0));
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
        assert_eq!(parse_millis("1m30s500ms"), Ok(90_500));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "30", "s", "30 s", "-5s", "1d", "30sec", "1.5s", "999999h"] {
            assert!(parse_millis(bad).is_err(), "{bad:?}");
        }
    }
}
