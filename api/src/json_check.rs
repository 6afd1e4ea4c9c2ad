//! The door for client JSON: what the service cannot store exactly is refused before anything
//! is parsed into a command.
//!
//! The service keeps numbers as 64-bit integers or IEEE 754 doubles (the I-JSON profile, RFC
//! 7493, which is also what RFC 8785's canonical JSON assumes), and stores text in PostgreSQL,
//! which has no NUL character. So a body is refused, naming the member, when it holds
//! - a number whose value a double cannot carry (`1e400`, `1e-400`, or more digits than a double
//!   keeps, like `0.1000000000000000000001` or `18446744073709551616`),
//! - `\u0000` in a string or a member name,
//! - the same member name twice in one object (which one would the service keep?).
//!
//! What passes reads back with the same value: `1.50` comes back as `1.5` and `1E2` as
//! `100.0`, never as another number.

use std::collections::HashSet;

/// Why a body cannot be stored, and where (`metadata.huge`, `records[3].request_body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstorable {
    pub path: String,
    pub reason: String,
}

/// Nesting deeper than serde_json's own limit is left for the parser to refuse.
const MAX_DEPTH: usize = 128;

/// Checks a JSON body. Text that is not JSON at all passes: the parser reports it better.
pub fn check(body: &[u8]) -> Result<(), Unstorable> {
    let mut scanner = Scanner {
        bytes: body,
        at: 0,
        path: Vec::new(),
    };
    scanner.whitespace();
    match scanner.value(0) {
        Err(Stop::Unstorable(found)) => Err(found),
        Ok(()) | Err(Stop::NotJson) => Ok(()),
    }
}

enum Stop {
    Unstorable(Unstorable),
    NotJson,
}

enum Segment {
    Member(String),
    Index(usize),
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    path: Vec<Segment>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Stop> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Stop::NotJson)
        }
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Member(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            "the body".to_owned()
        } else {
            out
        }
    }

    fn refuse(&self, reason: String) -> Stop {
        Stop::Unstorable(Unstorable {
            path: self.path(),
            reason,
        })
    }

    fn value(&mut self, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::NotJson);
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Stop::NotJson),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Stop> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Stop::NotJson)
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Stop> {
        self.expect(b'{')?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        let mut names = HashSet::new();
        loop {
            self.whitespace();
            let name = self.string()?;
            if !names.insert(name.clone()) {
                return Err(self.refuse(format!(
                    "the member `{}` appears twice in one object",
                    name.escape_debug()
                )));
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            self.path.push(Segment::Member(name));
            self.value(depth + 1)?;
            self.path.pop();
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::NotJson),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Stop> {
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.whitespace();
            self.path.push(Segment::Index(index));
            self.value(depth + 1)?;
            self.path.pop();
            index += 1;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::NotJson),
            }
        }
    }

    /// A string literal, decoded (lossily: only member names are kept, to name paths).
    fn string(&mut self) -> Result<String, Stop> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            match self.peek() {
                None => return Err(Stop::NotJson),
                Some(b'"') => break,
                Some(b'\\') => {
                    if self.bytes[self.at..].starts_with(b"\\u0000") {
                        return Err(self.refuse(
                            "holds the NUL character (\\u0000), which the service cannot store"
                                .to_owned(),
                        ));
                    }
                    self.at += 2;
                }
                Some(_) => self.at += 1,
            }
        }
        let raw = &self.bytes[start - 1..=self.at];
        self.at += 1;
        Ok(serde_json::from_slice::<String>(raw)
            .unwrap_or_else(|_| String::from_utf8_lossy(&raw[1..raw.len() - 1]).into_owned()))
    }

    fn number(&mut self) -> Result<(), Stop> {
        let start = self.at;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.at += 1;
        }
        let Ok(text) = std::str::from_utf8(&self.bytes[start..self.at]) else {
            return Err(Stop::NotJson);
        };
        match representable(text) {
            Ok(()) => Ok(()),
            Err(reason) => Err(self.refuse(reason)),
        }
    }
}

/// Whether the number `text` is kept exactly: as a 64-bit integer, or as the double whose
/// shortest form has the same decimal value.
pub fn representable(text: &str) -> Result<(), String> {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()) {
        return Ok(());
    }
    let Ok(double) = text.parse::<f64>() else {
        return Err(format!("`{text}` is not a number"));
    };
    let shown = shorten(text);
    if !double.is_finite() {
        return Err(format!(
            "the number {shown} is outside the range of an IEEE 754 double, the largest number the service stores (send it as a string)"
        ));
    }
    let kept = serde_json::Number::from_f64(double)
        .map(|n| n.to_string())
        .unwrap_or_default();
    if decimal(text) == decimal(&kept) {
        Ok(())
    } else {
        Err(format!(
            "the number {shown} has more digits than the service keeps: numbers are stored as 64-bit integers or IEEE 754 doubles, and this one would come back as {kept} (send it as a string)"
        ))
    }
}

/// A long literal, cut for an error message.
fn shorten(text: &str) -> String {
    if text.len() <= 40 {
        text.to_owned()
    } else {
        format!("{}…({} characters)", &text[..32], text.len())
    }
}

/// The decimal value of a JSON number literal, as (negative, significant digits, exponent):
/// `-12.50e1` → (true, "125", 0) meaning -0.125 × 10^… in a form where equal values are equal.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let exponent: i64 =
        exponent
            .trim_start_matches('+')
            .parse()
            .unwrap_or(if exponent.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return (negative, String::new(), 0);
    }
    // value = 0.<digits without leading zeros> × 10^(len(int) - leading + exponent)
    let point = (int.len() as i64) - (leading as i64);
    (
        negative,
        significant.to_owned(),
        exponent.saturating_add(point),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(body: &str) -> Unstorable {
        match check(body.as_bytes()) {
            Err(found) => found,
            Ok(()) => panic!("{body} was accepted"),
        }
    }

    #[test]
    fn numbers_a_double_cannot_carry_are_refused_naming_the_member() {
        let found = refused(r#"{"owner":"a","metadata":{"huge":1e400}}"#);
        assert_eq!(found.path, "metadata.huge");
        assert!(
            found.reason.contains("outside the range"),
            "{}",
            found.reason
        );
        assert_eq!(refused(r#"{"m":[1, 2, 1e-400]}"#).path, "m[2]");
        assert!(
            refused(r#"{"m":0.1000000000000000000001}"#)
                .reason
                .contains("more digits")
        );
        assert!(
            refused(r#"{"m":18446744073709551616}"#)
                .reason
                .contains("more digits")
        );
    }

    #[test]
    fn numbers_a_double_or_a_64_bit_integer_carries_pass() {
        for body in [
            "1.7976931348623157e308",
            "3.9176200000000003",
            "-0.0",
            "-0",
            "1.50",
            "1E2",
            "1e20",
            "100000000000000000000",
            "18446744073709551615",
            "-9223372036854775808",
            "5e-324",
            "0.1",
            "[1,{\"a\":[2.5e-3]}]",
        ] {
            assert_eq!(check(body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn a_nul_character_is_refused_naming_the_member() {
        let found = refused(r#"{"reason":"a\u0000b"}"#);
        assert_eq!(found.path, "reason");
        assert!(found.reason.contains("NUL"));
        assert_eq!(refused(r#"{"m":{"a\u0000":1}}"#).path, "m");
        // An escaped backslash followed by u0000 is text, not a NUL.
        assert_eq!(check(br#"{"m":"\\u0000"}"#), Ok(()));
    }

    #[test]
    fn a_member_named_twice_is_refused() {
        let found = refused(r#"{"metadata":{"a":1,"a":2}}"#);
        assert_eq!(found.path, "metadata");
        assert!(found.reason.contains("twice"));
    }

    #[test]
    fn text_that_is_not_json_is_left_to_the_parser() {
        for body in ["", "{", "{\"a\":}", "[1,", "nul", "\"abc"] {
            assert_eq!(check(body.as_bytes()), Ok(()), "{body}");
        }
    }

    proptest! {
        /// Every number the check lets through parses to a double (or integer) whose stored
        /// text has the same decimal value as the client's.
        #[test]
        fn what_passes_reads_back_with_the_same_value(
            negative in any::<bool>(),
            int in "[0-9]{1,25}",
            frac in proptest::option::of("[0-9]{0,25}"),
            exp in proptest::option::of(-400i32..400),
        ) {
            let mut text = String::new();
            if negative { text.push('-'); }
            text.push_str(int.trim_start_matches('0'));
            if text.ends_with('-') || text.is_empty() { text.push('0'); }
            if let Some(frac) = frac.as_deref().filter(|f| !f.is_empty()) {
                text.push('.');
                text.push_str(frac);
            }
            if let Some(exp) = exp { text.push_str(&format!("e{exp}")); }
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            if check(text.as_bytes()).is_ok() {
                let stored = serde_json::to_string(&value).unwrap();
                prop_assert_eq!(decimal(&stored), decimal(&text), "{} stored as {}", text, stored);
            }
        }
    }
}
