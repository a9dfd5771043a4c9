//! Timestamps as reel hands them to projections: RFC 3339, UTC, microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Format microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    }
    // Digits by hand: every event read from PostgreSQL has its `occurred_at`
    // formatted, and `format!` was ~4% of reel's CPU in a rebuild.
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, width: usize, mut n: u64| {
        for i in (end - width..end).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(4, 4, year as u64);
    put(7, 2, u64::from(month));
    put(10, 2, u64::from(day));
    put(13, 2, (rem / 3600) as u64);
    put(16, 2, ((rem % 3600) / 60) as u64);
    put(19, 2, (rem % 60) as u64);
    put(26, 6, micros as u64);
    String::from_utf8(out.to_vec()).expect("digits and separators are ASCII")
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into microseconds since
/// the Unix epoch (`None` if it is not that shape).
pub fn parse_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse().ok() };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        let kept = &digits[..digits.len().min(6)];
        micros = kept.parse::<i64>().ok()? * 10i64.pow(6 - kept.len() as u32);
    }
    let offset_secs = match &text[i..] {
        "Z" | "z" | "" => 0,
        tz if tz.len() >= 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600 + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_with_microseconds() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(1_795_801_511_123_456), "2026-11-27T17:45:11.123456Z");
        assert_eq!(format_micros(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn digits_by_hand_match_format_across_the_calendar() {
        let reference = |m: i64| {
            let (secs, micros) = (m.div_euclid(1_000_000), m.rem_euclid(1_000_000));
            let rem = secs.rem_euclid(86_400);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
        };
        // From before year 0 to after 9999, in uneven steps.
        let mut m = -62_300_000_000_000_000i64;
        while m < 253_500_000_000_000_000 {
            assert_eq!(format_micros(m), reference(m), "{m}");
            m += 7_777_777_777_777;
        }
        assert_eq!(format_micros(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_micros(253_402_300_800_000_000), "10000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for micros in [0, 1_795_801_511_123_456, 951_782_400_000_001, -1] {
            assert_eq!(parse_micros(&format_micros(micros)), Some(micros));
        }
        assert_eq!(parse_micros("2026-11-27T17:45:11.123Z"), Some(1_795_801_511_123_000));
        assert_eq!(parse_micros("2026-11-27 18:45:11+01:00"), Some(1_795_801_511_000_000));
        assert_eq!(parse_micros("yesterday"), None);
    }
}
