//! Deterministic detectors for structured PII: e-mail addresses, phone numbers, payment card
//! numbers (Luhn), IBANs (ISO 13616 mod-97) and US social security numbers.
//!
//! Type names are Presidio's, as used by vLLM Semantic Router's `pii_types_allowed`. Each
//! detector gives a fixed confidence: 1.0 where a checksum or an unambiguous shape confirms the
//! match (e-mail, card, IBAN), less where only the shape does (SSN 0.9, phone numbers 0.8, or
//! 0.9 with a `+` country code or an area code in parentheses), so `classifier.pii_model.threshold`
//! can drop the weaker detectors. The scanners work on ASCII bytes; any other character is a
//! boundary.

pub const EMAIL_ADDRESS: &str = "EMAIL_ADDRESS";
pub const PHONE_NUMBER: &str = "PHONE_NUMBER";
pub const CREDIT_CARD: &str = "CREDIT_CARD";
pub const IBAN_CODE: &str = "IBAN_CODE";
pub const US_SSN: &str = "US_SSN";

/// Every PII type name a policy may list: vLLM Semantic Router's set, plus the Presidio names
/// of what the PII token classifier finds beyond it (`pii_model::presidio_type`). The detectors
/// here find the structured ones.
pub const PII_TYPES: &[&str] = &[
    "ABA_ROUTING_NUMBER",
    "AGE",
    CREDIT_CARD,
    "DATE_TIME",
    "DOMAIN_NAME",
    EMAIL_ADDRESS,
    "GOVERNMENT_ID",
    "GPE",
    IBAN_CODE,
    "IP_ADDRESS",
    "NO_PII",
    "NRP",
    "ORGANIZATION",
    "PERSON",
    PHONE_NUMBER,
    "STREET_ADDRESS",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    US_SSN,
    "ZIP_CODE",
];

/// One detection: the type, the byte range in the text and the detector's confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct PiiMatch {
    pub kind: &'static str,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// All detections in `text`, by start offset. Spans do not overlap: IBANs win over cards, and
/// both over phone numbers.
pub fn detect(text: &str) -> Vec<PiiMatch> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    out.extend(emails(b));
    out.extend(ibans(b));
    let ibans: Vec<(usize, usize)> = out.iter().map(|m| (m.start, m.end)).collect();
    // Digits inside an IBAN are its account number, not a card.
    out.extend(cards(b).into_iter().filter(|c| !ibans.iter().any(|&(s, e)| c.start < e && s < c.end)));
    out.extend(ssns(b));
    let taken: Vec<(usize, usize)> = out.iter().map(|m| (m.start, m.end)).collect();
    out.extend(
        phones(b)
            .into_iter()
            .filter(|p| !taken.iter().any(|&(s, e)| p.start < e && s < p.end)),
    );
    out.sort_by_key(|m| m.start);
    out
}

/// The distinct types found in `texts` with at least `threshold` confidence, sorted.
pub fn detected_types<S: AsRef<str>>(texts: &[S], threshold: f32) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = texts
        .iter()
        .flat_map(|t| detect(t.as_ref()))
        .filter(|m| m.confidence >= threshold)
        .map(|m| m.kind)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

fn alnum(c: Option<&u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn emails(b: &[u8]) -> Vec<PiiMatch> {
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    let mut out = Vec::new();
    let mut last_end = 0;
    for at in 0..b.len() {
        if b[at] != b'@' || at < last_end {
            continue;
        }
        let mut s = at;
        while s > last_end && local(b[s - 1]) {
            s -= 1;
        }
        while s < at && b[s] == b'.' {
            s += 1;
        }
        let mut e = at + 1;
        while e < b.len() && domain(b[e]) {
            e += 1;
        }
        while e > at + 1 && (b[e - 1] == b'.' || b[e - 1] == b'-') {
            e -= 1;
        }
        if s == at || e <= at + 1 {
            continue;
        }
        let dom = &b[at + 1..e];
        let labels: Vec<&[u8]> = dom.split(|&c| c == b'.').collect();
        let tld = labels.last().copied().unwrap_or_default();
        let ok = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
            && tld.len() >= 2
            && tld.iter().all(|c| c.is_ascii_alphabetic())
            && b[at - 1] != b'.';
        if ok {
            out.push(PiiMatch { kind: EMAIL_ADDRESS, start: s, end: e, confidence: 1.0 });
            last_end = e;
        }
    }
    out
}

/// Runs of digits joined by single separators from `seps`; returns (start, end, digits).
fn digit_groups(b: &[u8], seps: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric())) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = Vec::new();
        let mut end = i;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                digits.push(b[i] - b'0');
                i += 1;
                end = i;
            } else if seps.contains(&b[i]) && b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            } else {
                break;
            }
        }
        if !alnum(b.get(end)) {
            out.push((start, end, digits));
        }
        i = end.max(start + 1);
    }
    out
}

/// Luhn checksum of a digit string.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum % 10 == 0
}

/// Groupings printed on cards: 4-4-4-4 (and 4-4-4-4-3), Amex 4-6-5, Diners 4-6-4.
const CARD_GROUPS: &[&[usize]] = &[&[4, 4, 4, 4], &[4, 4, 4, 4, 3], &[4, 6, 5], &[4, 6, 4]];

fn cards(b: &[u8]) -> Vec<PiiMatch> {
    digit_groups(b, b" -")
        .into_iter()
        .filter(|(start, end, d)| {
            let groups: Vec<usize> = b[*start..*end]
                .split(|c| !c.is_ascii_digit())
                .map(|g| g.len())
                .collect();
            (13..=19).contains(&d.len())
                && (groups.len() == 1 || CARD_GROUPS.contains(&groups.as_slice()))
                && (2..=6).contains(&d[0])
                && d.iter().any(|&x| x != d[0])
                && luhn_valid(d)
        })
        .map(|(start, end, _)| PiiMatch { kind: CREDIT_CARD, start, end, confidence: 1.0 })
        .collect()
}

fn ssns(b: &[u8]) -> Vec<PiiMatch> {
    let mut out = Vec::new();
    for sep in [b'-', b' '] {
        for (start, end, d) in digit_groups(b, &[sep]) {
            // Exactly the 3-2-4 grouping.
            let text = &b[start..end];
            let shape = text.len() == 11 && text[3] == sep && text[6] == sep;
            if !shape || d.len() != 9 {
                continue;
            }
            let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
            let group = d[3] * 10 + d[4];
            let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + x as u32);
            if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
                continue;
            }
            out.push(PiiMatch { kind: US_SSN, start, end, confidence: 0.9 });
        }
    }
    out
}

/// ISO 13616 check: the rearranged IBAN, letters as 10..35, is 1 modulo 97.
pub fn iban_valid(iban: &str) -> bool {
    let s: Vec<u8> = iban.bytes().filter(|c| *c != b' ').collect();
    if !(15..=34).contains(&s.len())
        || !s[..2].iter().all(|c| c.is_ascii_uppercase())
        || !s[2..4].iter().all(|c| c.is_ascii_digit())
        || !s.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = if c.is_ascii_digit() { (c - b'0') as u32 } else { (c - b'A') as u32 + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn ibans(b: &[u8]) -> Vec<PiiMatch> {
    let up = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= b.len() {
        let start_ok = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if !start_ok {
            i += 1;
            continue;
        }
        // Candidate ends: at every group boundary (a space) and at the end of the run.
        let mut ends = Vec::new();
        let mut j = i;
        let mut chars = 0;
        while j < b.len() && chars < 34 {
            if up(b[j]) {
                j += 1;
                chars += 1;
            } else if b[j] == b' ' && b.get(j + 1).is_some_and(|&c| up(c)) {
                ends.push(j);
                j += 1;
            } else {
                break;
            }
        }
        if !alnum(b.get(j)) {
            ends.push(j);
        }
        let found = ends.iter().rev().copied().find(|&e| {
            !b[e - 1].is_ascii_lowercase()
                && std::str::from_utf8(&b[i..e]).is_ok_and(iban_valid)
        });
        match found {
            Some(e) => {
                out.push(PiiMatch { kind: IBAN_CODE, start: i, end: e, confidence: 1.0 });
                i = e;
            }
            None => i += 1,
        }
    }
    out
}

fn phones(b: &[u8]) -> Vec<PiiMatch> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let starts = c == b'+' || c == b'(' || c.is_ascii_digit();
        if !starts || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'+')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i;
        let mut digits = 0;
        let mut run_sep = 0;
        let mut parens = false;
        while j < b.len() {
            let c = b[j];
            if c.is_ascii_digit() {
                digits += 1;
                run_sep = 0;
            } else if (c == b'+' && j == start) || b" -.()".contains(&c) {
                if c == b'(' || c == b')' {
                    parens = true;
                }
                run_sep += 1;
                if run_sep > 2 {
                    break;
                }
            } else {
                break;
            }
            j += 1;
        }
        // Trim trailing separators (but keep a closing parenthesis that closes a group).
        let mut end = j;
        while end > start && !b[end - 1].is_ascii_digit() {
            end -= 1;
        }
        let plus = b[start] == b'+';
        // Without a country code: at least three groups of at most four digits, as numbers are
        // written ("(415) 555-0132", "020 7946 0958"), which decimals, dates and ids are not.
        let groups: Vec<usize> = b[start..end]
            .split(|c| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .map(|g| g.len())
            .collect();
        let grouped = groups.len() >= 3 && groups.iter().all(|&g| g <= 4);
        if (10..=15).contains(&digits) && (plus || grouped) && !alnum(b.get(end)) {
            let confidence = if plus || parens { 0.9 } else { 0.8 };
            out.push(PiiMatch { kind: PHONE_NUMBER, start, end, confidence });
            i = end;
        } else {
            i = j.max(i + 1);
        }
    }
    out
}
