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

use std::borrow::Cow;
use std::collections::HashSet;

/// Why a body cannot be stored, and where (`metadata.huge`, `records[3].duration_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstorable {
    pub path: String,
    pub reason: String,
}

/// Nesting deeper than serde_json's own limit is left for the parser to refuse.
const MAX_DEPTH: usize = 128;

/// Checks a JSON body. Text that is not JSON at all passes: the parser reports it better.
pub fn check(body: &[u8]) -> Result<(), Unstorable> {
    check_keeping_text(body, &[]).map(|_| ())
}

/// Checks a JSON body in which the members named `text_members` (at any depth) hold JSON the
/// service keeps as text, such as the bodies of request records: their values are not held
/// to the rules above, since the text they are is what is stored. The body is handed back
/// with each such value that is not a string or `null` turned into the JSON string of its
/// text, exactly as sent, so that a parser reads it as that text rather than as a value
/// whose numbers it would round and whose members it would reorder.
pub fn check_keeping_text<'a>(
    body: &'a [u8],
    text_members: &[&str],
) -> Result<Cow<'a, [u8]>, Unstorable> {
    let mut scanner = Scanner {
        bytes: body,
        at: 0,
        path: Vec::new(),
        text_members,
        in_text: false,
        texts: Vec::new(),
    };
    scanner.whitespace();
    match scanner.value(0) {
        Err(Stop::Unstorable(found)) => Err(found),
        Err(Stop::NotJson) => Ok(Cow::Borrowed(body)),
        Ok(()) if scanner.texts.is_empty() => Ok(Cow::Borrowed(body)),
        Ok(()) => Ok(Cow::Owned(as_strings(body, &scanner.texts))),
    }
}

/// `body` with each span of `texts` that is not a string or `null` written as a JSON string.
fn as_strings(body: &[u8], texts: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let mut copied = 0;
    for &(start, end) in texts {
        let value = &body[start..end];
        let text = match std::str::from_utf8(value) {
            Ok(text) if value[0] != b'"' && value != b"null" => text,
            // A string or null is read as it is; text that is not UTF-8 is left for the
            // parser to refuse.
            _ => continue,
        };
        out.extend_from_slice(&body[copied..start]);
        match serde_json::to_vec(text) {
            Ok(quoted) => out.extend_from_slice(&quoted),
            Err(_) => out.extend_from_slice(value),
        }
        copied = end;
    }
    out.extend_from_slice(&body[copied..]);
    out
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
    /// Members whose values are kept as text.
    text_members: &'a [&'a str],
    /// Inside such a value: nothing is refused.
    in_text: bool,
    /// Where each such value starts and ends.
    texts: Vec<(usize, usize)>,
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

    fn refuse(&self, reason: String) -> Result<(), Stop> {
        if self.in_text {
            return Ok(());
        }
        Err(Stop::Unstorable(Unstorable {
            path: self.path(),
            reason,
        }))
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
                self.refuse(format!(
                    "the member `{}` appears twice in one object",
                    name.escape_debug()
                ))?;
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            let text = !self.in_text && self.text_members.contains(&name.as_str());
            self.path.push(Segment::Member(name));
            let start = self.at;
            self.in_text |= text;
            self.value(depth + 1)?;
            if text {
                self.in_text = false;
                self.texts.push((start, self.at));
            }
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
                        self.refuse(
                            "holds the NUL character (\\u0000), which the service cannot store"
                                .to_owned(),
                        )?;
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
            Err(reason) => self.refuse(reason),
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

    fn keeping_bodies(body: &str) -> Result<String, Unstorable> {
        check_keeping_text(body.as_bytes(), &["request_body", "response_body"])
            .map(|kept| String::from_utf8(kept.into_owned()).unwrap())
    }

    #[test]
    fn a_member_kept_as_text_reaches_the_parser_as_the_text_it_was_sent_as() {
        let sent = r#"{"service": "llm", "request_body": {"z": 1, "a": 123456789012345678901234567890,
            "n": 1e400, "twice": 1, "twice": 2, "nul": "\u0000"}, "response_body": [1.50, -0]}"#;
        let kept: serde_json::Value = serde_json::from_str(&keeping_bodies(sent).unwrap()).unwrap();
        assert_eq!(
            kept["request_body"],
            r#"{"z": 1, "a": 123456789012345678901234567890,
            "n": 1e400, "twice": 1, "twice": 2, "nul": "\u0000"}"#
        );
        assert_eq!(kept["response_body"], "[1.50, -0]");
        assert_eq!(kept["service"], "llm");
        // A string or null is read as it is; a batch keeps each record's bodies.
        let sent =
            r#"[{"request_body": "plain text", "response_body": null}, {"response_body": 7}]"#;
        assert_eq!(
            keeping_bodies(sent).unwrap(),
            r#"[{"request_body": "plain text", "response_body": null}, {"response_body": "7"}]"#
        );
    }

    #[test]
    fn outside_the_members_kept_as_text_the_rules_hold() {
        let found =
            keeping_bodies(r#"{"duration_ms": 1e400, "request_body": {"a": 1}}"#).unwrap_err();
        assert_eq!(found.path, "duration_ms");
        let found =
            keeping_bodies(r#"[{"response_body": 1}, {"service": "a\u0000"}]"#).unwrap_err();
        assert_eq!(found.path, "[1].service");
        // A string kept as text may hold a NUL: the text stored is redacted, which writes
        // it as U+FFFD.
        assert!(keeping_bodies(r#"{"request_body": "a\u0000"}"#).is_ok());
        // Text that is not JSON is left to the parser, unchanged.
        assert_eq!(
            keeping_bodies(r#"{"request_body": {"#).unwrap(),
            r#"{"request_body": {"#
        );
    }

    proptest! {
        /// Whatever JSON a member kept as text holds, the parser reads the exact text of it.
        #[test]
        fn a_member_kept_as_text_is_read_as_its_exact_text(
            names in prop::collection::vec("[a-z]{1,4}", 0..4),
            numbers in prop::collection::vec("-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", 0..4),
            spaced in any::<bool>(),
        ) {
            let space = if spaced { " \n " } else { "" };
            let members: Vec<String> = names
                .iter()
                .zip(numbers.iter().cycle())
                .map(|(name, number)| format!("\"{name}\":{space}{number}"))
                .collect();
            let text = format!("{{{space}{}{space}}}", members.join(","));
            let body = format!(r#"{{"service":"s","response_body":{space}{text}{space}}}"#);
            let kept: serde_json::Value =
                serde_json::from_str(&keeping_bodies(&body).unwrap()).unwrap();
            prop_assert_eq!(kept["response_body"].as_str(), Some(text.as_str()));
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
