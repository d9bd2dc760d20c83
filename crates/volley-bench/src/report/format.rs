//! Number and text formatting shared by the markdown and HTML reports.
//!
//! Every figure goes through here so both reports print it the same way. Values that are not
//! finite (a rate over a zero wall time, say) print as `–` rather than `NaN` or `inf`.

/// Printed for a value that is missing or not finite.
pub(super) const NONE: &str = "–";

/// A count with thousands separators: `1,234,567`.
pub(super) fn int(n: u64) -> String {
    group(&n.to_string())
}

/// A measured value with a precision that suits its size: `12,345`, `1,021.4`, `12.34`,
/// `0.0123`.
pub(super) fn num(v: f64) -> String {
    if !v.is_finite() {
        return NONE.to_owned();
    }
    let a = v.abs();
    let decimals = if a >= 100_000.0 || a == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Three significant digits for small values; `a` is in (0, 1) here, so the
        // logarithm is negative and the cast cannot overflow.
        (2 - a.log10().floor() as i64).clamp(0, 9) as usize
    };
    fixed(v, decimals)
}

/// A value with exactly `decimals` decimals and thousands separators; `–` when not finite.
pub(super) fn fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return NONE.to_owned();
    }
    let text = format!("{v:.decimals$}");
    match text.split_once('.') {
        Some((whole, frac)) => format!("{}.{frac}", group(whole)),
        None => group(&text),
    }
}

/// A duration given in milliseconds: `850 ms`, `61.2 s`, `12 min 05 s`.
pub(super) fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return NONE.to_owned();
    }
    if ms < 1_000.0 {
        format!("{} ms", num(ms))
    } else if ms < 600_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else {
        // Whole seconds are plenty at this length; the cast saturates on absurd values.
        let secs = (ms / 1_000.0).round() as u64;
        format!("{} min {:02} s", int(secs / 60), secs % 60)
    }
}

/// A size in bytes with a binary unit: `48.2 MiB`; `–` for 0 (not measured).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n == 0 {
        return NONE.to_owned();
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `part` as a percentage of `whole`: `0.13 %`; `–` when `whole` is 0.
pub(super) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return NONE.to_owned();
    }
    format!("{} %", num(part as f64 * 100.0 / whole as f64))
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a markdown table cell: no markup, no HTML, no column break, one line.
pub(super) fn md(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            // CommonMark lets a backslash escape any ASCII punctuation; these are the ones
            // that could start markup, an HTML tag or an entity, or end the table cell.
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '&' => {
                out.push('\\');
                out.push(c);
            }
            // An underscore inside a word cannot open or close emphasis, so `rate_limited`
            // stays readable in the raw file.
            '_' if !(i > 0
                && chars[i - 1].is_alphanumeric()
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric())) =>
            {
                out.push_str("\\_");
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Inserts a comma every three digits in a run of digits with an optional leading `-`.
pub(super) fn group(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut out = String::with_capacity(sign.len() + digits.len() + digits.len() / 3);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_a_precision_that_suits_their_size() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1_021.44), "1,021.4");
        assert_eq!(num(123_456.7), "123,457");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(2.7), "2.70");
        assert_eq!(fixed(15.2, 2), "15.20");
        assert_eq!(fixed(1_234.5, 0), "1,234");
        assert_eq!(num(-1_500.0), "-1,500.0");
        assert_eq!(num(0.012_34), "0.0123");
        assert_eq!(num(f64::NAN), NONE);
        assert_eq!(num(f64::INFINITY), NONE);
    }

    #[test]
    fn durations_sizes_and_shares() {
        assert_eq!(duration_ms(850.0), "850.0 ms");
        assert_eq!(duration_ms(61_234.0), "61.2 s");
        assert_eq!(duration_ms(725_000.0), "12 min 05 s");
        assert_eq!(duration_ms(f64::NAN), NONE);
        assert_eq!(bytes(0), NONE);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(50_541_363), "48.2 MiB");
        assert_eq!(percent(13, 10_000), "0.130 %");
        assert_eq!(percent(1, 0), NONE);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            html(r#"http://x/<script>"a"&'b'"#),
            "http://x/&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        assert_eq!(md("a|b <i>*x*</i>\nc"), r"a\|b \<i\>\*x\*\</i\> c");
        assert_eq!(md("rate_limited _x_ y_"), r"rate_limited \_x\_ y\_");
    }
}
