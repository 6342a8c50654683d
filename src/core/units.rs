//! Sizes and durations as people write them: `10KiB`, `1MiB`, `5MB`, `250ms`, `2m`.

use std::time::Duration;

/// Parse a byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB; case-insensitive).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "size {text:?} must start with a number, e.g. 0, 10KiB, 1MiB"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("size {text:?}: {number:?} is not a number"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "size {text:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
            ));
        }
    };
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes > (1u64 << 40) as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parse a comma-separated ladder of sizes: `0,10KiB,1MiB`.
pub(crate) fn parse_size_list(text: &str) -> Result<Vec<u64>, String> {
    let sizes: Vec<u64> = text
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_size)
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        return Err("the size ladder is empty; give e.g. --sizes 0,10KiB,1MiB".into());
    }
    Ok(sizes)
}

/// Human size with binary units: `0 B`, `10 KiB`, `1.5 MiB`.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if (value - value.round()).abs() < 0.05 {
        format!("{} {unit}", value.round())
    } else {
        format!("{value:.1} {unit}")
    }
}

/// A compact size label for metrics and tables: `0`, `10KiB`, `1MiB`, `1.5MiB`.
pub(crate) fn size_label(bytes: u64) -> String {
    format_size(bytes).replace(' ', "")
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("duration {text:?}: {e} (write e.g. 500ms, 10s, 2m)"))
}

pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.2} ms", ms)
    } else if ms < 1000.0 {
        format!("{:.0} ms", ms)
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

pub(crate) fn format_ms(ms: f64) -> String {
    format_duration(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10KiB").unwrap(), 10 * 1024);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("5 MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("1.5mib").unwrap(), 1_572_864);
        assert_eq!(parse_size("50MiB").unwrap(), 50 << 20);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999TiB").is_err());
    }

    #[test]
    fn size_lists() {
        assert_eq!(
            parse_size_list("0,10KiB,1MiB,5MiB").unwrap(),
            vec![0, 10240, 1 << 20, 5 << 20]
        );
        assert!(parse_size_list(" , ").is_err());
        assert!(parse_size_list("0,x").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(10 * 1024), "10 KiB");
        assert_eq!(format_size(1_572_864), "1.5 MiB");
        assert_eq!(size_label(5 << 20), "5MiB");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }
}
