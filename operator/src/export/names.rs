//! File names inside export archives and downloads: safe on Windows, macOS and Linux.

/// A path component every common file system accepts: no separators, reserved characters,
/// control characters, trailing dots or spaces, or Windows device names; at most 64 bytes.
pub fn safe_component(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | '+' | '@' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    while s.ends_with('.') || s.ends_with(' ') {
        s.pop();
    }
    let stem = s.split('.').next().unwrap_or_default().to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if s.is_empty() || reserved {
        s.insert(0, '_');
    }
    s
}

/// The user part of an AoR (`sip:+3120…@pbx` → `+3120…`), for file names.
pub fn party(aor: Option<&str>) -> String {
    let Some(aor) = aor else {
        return "unknown".into();
    };
    let bare = aor
        .trim_start_matches("sips:")
        .trim_start_matches("sip:")
        .trim_start_matches("tel:");
    safe_component(bare.split(['@', ';']).next().unwrap_or(bare))
}

/// `(yyyy-mm-dd, hhmmss)` of a start time in `tz`, for file names.
pub fn stamp(start: Option<jiff::Timestamp>, tz: &jiff::tz::TimeZone) -> (String, String) {
    start.map_or(("unknown".into(), "000000".into()), |t| {
        let z = t.to_zoned(tz.clone());
        (
            format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day()),
            format!("{:02}{:02}{:02}", z.hour(), z.minute(), z.second()),
        )
    })
}
