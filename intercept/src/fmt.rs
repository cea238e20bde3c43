//! Allocation-free number formatting and parsing, for use inside hooks and
//! at exit (where the allocator may be in an unknown state).

/// Writes `v` in decimal at the start of `out`; returns the digits written
/// (0 if `out` is too small).
pub fn write_u64(out: &mut [u8], mut v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n > out.len() {
        return 0;
    }
    for i in 0..n {
        out[i] = tmp[n - 1 - i];
    }
    n
}

/// Parses a byte size: plain bytes, or a number with a `K/M/G/T` suffix,
/// optionally followed by `B` or `iB` (`64MiB`, `1G`, `512kb`). All suffixes
/// are powers of 1024.
pub fn parse_size(s: &[u8]) -> Option<u64> {
    let s = trim(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let unit = trim(&s[digits..]);
    let shift = match unit.first().map(|b| b.to_ascii_lowercase()) {
        None => return Some(v),
        Some(b'b') if unit.len() == 1 => 0,
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        _ => return None,
    };
    let rest = &unit[1..];
    let ok = rest.is_empty() || rest.eq_ignore_ascii_case(b"b") || rest.eq_ignore_ascii_case(b"ib");
    if !ok && shift != 0 {
        return None;
    }
    v.checked_mul(1u64 << shift)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut b = [0u8; 20];
        let n = write_u64(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = write_u64(&mut b, u64::MAX);
        assert_eq!(&b[..n], b"18446744073709551615");
        assert_eq!(write_u64(&mut [0u8; 2], 123), 0);
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64MiB"), Some(64 << 20));
        assert_eq!(parse_size(b" 1GiB "), Some(1 << 30));
        assert_eq!(parse_size(b"512k"), Some(512 << 10));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"10B"), Some(10));
        assert_eq!(parse_size(b"MiB"), None);
        assert_eq!(parse_size(b"12Q"), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
    }
}
