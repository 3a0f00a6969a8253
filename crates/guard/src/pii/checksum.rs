//! Check-digit algorithms of the identifiers the detectors recognise.
//!
//! Each function takes the identifier's digits only (separators removed) and returns whether
//! the check digits agree. Wrong lengths and non-digits return `false`, never panic.

/// The decimal digits of `s` as numbers, or `None` if `s` has anything but ASCII digits.
pub fn digits(s: &str) -> Option<Vec<u32>> {
    s.chars().map(|c| c.to_digit(10)).collect()
}

/// Luhn (mod 10) check used by bank cards.
pub fn luhn(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() < 2 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn weighted_check(d: &[u32], weights: &[u32]) -> u32 {
    let s: u32 = d.iter().zip(weights).map(|(a, b)| a * b).sum();
    (s % 11) % 10
}

/// Russian taxpayer number (ИНН): 10 digits (organisations) or 12 digits (individuals).
pub fn inn(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    match d.len() {
        10 => weighted_check(&d[..9], &[2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[9],
        12 => {
            weighted_check(&d[..10], &[7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[10]
                && weighted_check(&d[..11], &[3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[11]
        }
        _ => false,
    }
}

/// Russian pension insurance number (СНИЛС): 11 digits, the last two a checksum.
///
/// Numbers up to 001-001-998 were issued before the checksum existed and are not checked
/// (returns `false`: they cannot be told apart from arbitrary digits).
pub fn snils(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 11 {
        return false;
    }
    let body: u64 = d[..9].iter().fold(0u64, |a, &x| a * 10 + u64::from(x));
    if body <= 1_001_998 {
        return false;
    }
    let sum: u32 = d[..9].iter().enumerate().map(|(i, &x)| x * (9 - i as u32)).sum();
    let check = match sum {
        s if s < 100 => s,
        100 | 101 => 0,
        s => {
            let r = s % 101;
            if r == 100 { 0 } else { r }
        }
    };
    check == d[9] * 10 + d[10]
}

/// Russian state registration number: ОГРН (13 digits) or ОГРНИП (15 digits).
pub fn ogrn(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    let (body_len, modulus) = match d.len() {
        13 => (12, 11u64),
        15 => (14, 13u64),
        _ => return false,
    };
    let body: u64 = d[..body_len].iter().fold(0u64, |a, &x| a * 10 + u64::from(x));
    ((body % modulus) % 10) as u32 == d[body_len]
}

/// IBAN (ISO 13616) mod-97 check; `s` is the IBAN without spaces, letters upper-case.
pub fn iban(s: &str) -> bool {
    let b = s.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500005555555559"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("3479451430365235"));
        assert!(!luhn("41111111x1111111"));
        assert!(!luhn(""));
    }

    #[test]
    fn inn_known_values() {
        assert!(inn("7707083893")); // Sberbank
        assert!(inn("500100732259"));
        assert!(!inn("7707083894"));
        assert!(!inn("500100732258"));
        assert!(!inn("500100732249"));
        assert!(!inn("77070838"));
    }

    #[test]
    fn snils_known_values() {
        assert!(snils("11223344595"));
        assert!(!snils("11223344596"));
        assert!(!snils("00100199800")); // pre-checksum range
        assert!(!snils("1122334459"));
    }

    #[test]
    fn snils_checksum_wraps_at_101() {
        // Every 9-digit body above the legacy range: the check value is always < 100.
        for body in [999_999_999u64, 123_456_789, 987_654_321, 500_000_001] {
            let s = format!("{body:09}");
            let d = digits(&s).expect("digits");
            let sum: u32 = d.iter().enumerate().map(|(i, &x)| x * (9 - i as u32)).sum();
            let c = if sum < 100 { sum } else if sum <= 101 { 0 } else { sum % 101 % 100 };
            assert!(snils(&format!("{s}{c:02}")), "{s}{c:02}");
        }
    }

    #[test]
    fn ogrn_known_values() {
        assert!(ogrn("1027700132195")); // Sberbank
        assert!(!ogrn("1027700132196"));
        assert!(ogrn("304500116000157"));
        assert!(!ogrn("304500116000158"));
    }

    #[test]
    fn iban_known_values() {
        assert!(iban("GB82WEST12345698765432"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("GB82WEST12345698765433"));
        assert!(!iban("gb82WEST12345698765432"));
    }
}
