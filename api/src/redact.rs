//! Redaction before anything is stored or logged: license keys and API keys in free text become
//! their display prefix followed by `…`; JSON members named like a secret (key, password, token,
//! secret, authorization) become `"[REDACTED]"`; bodies are truncated to a bound.

use std::borrow::Cow;

/// License keys (`lic_`) and API keys (`klk_`): a prefix and a base58 body.
const KEY_PREFIXES: [&str; 2] = ["lic_", crate::api_key::PREFIX];
const KEY_PREFIX_LEN: usize = 4;
/// Characters of the key body kept, as in the stored display prefix.
const KEPT: usize = 8;
/// Shorter runs are not keys (a key body is about 49 characters).
const MIN_BODY: usize = 20;

fn is_base58(b: u8) -> bool {
    b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l')
}

/// Replaces every `lic_…` and `klk_…` key in `text` with its display prefix.
pub fn redact_license_keys(text: &str) -> Cow<'_, str> {
    if !KEY_PREFIXES.iter().any(|prefix| text.contains(prefix)) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    shorten_tokens(text, |i| {
        if !KEY_PREFIXES
            .iter()
            .any(|prefix| text[i..].starts_with(prefix))
        {
            return None;
        }
        let body_start = i + KEY_PREFIX_LEN;
        let body_len = bytes[body_start..]
            .iter()
            .take_while(|b| is_base58(**b))
            .count();
        (body_len >= MIN_BODY).then_some(body_start + body_len)
    })
}

/// `text` with each token `token_end` finds (it gives the end of the token starting at a
/// byte, if one does) cut to its first characters (`KEY_PREFIX_LEN + KEPT`) and `…`.
fn shorten_tokens(text: &str, token_end: impl Fn(usize) -> Option<usize>) -> Cow<'_, str> {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < text.len() {
        if let Some(end) = token_end(i) {
            out.push_str(&text[i..i + KEY_PREFIX_LEN + KEPT]);
            out.push('…');
            i = end;
            changed = true;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Legacy keys (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`) in free text become their first group.
fn redact_legacy_keys(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let key_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let is_key_at = |i: usize| {
        i + 29 <= bytes.len()
            && (0..29).all(|j| {
                if j % 6 == 5 {
                    bytes[i + j] == b'-'
                } else {
                    key_char(bytes[i + j])
                }
            })
            && (i == 0 || !key_char(bytes[i - 1]))
            && (i + 29 == bytes.len() || !key_char(bytes[i + 29]))
    };
    if !(0..bytes.len()).any(is_key_at) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_key_at(i) {
            out.push_str(&text[i..i + 6]);
            out.push('…');
            i += 29;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    Cow::Owned(out)
}

/// Whether a JSON member's name marks a secret: one of its words is key, password, token,
/// secret or authorization (`api_key`, `accessToken`, `X-Secret`), unless it only names a
/// harmless view of one (`key_prefix`, `token_id`, `key_hash`).
pub fn is_secret_name(name: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for ch in name.chars() {
        if !ch.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if ch.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        current.push(ch.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    const SECRET: [&str; 9] = [
        "key",
        "apikey",
        "password",
        "passwd",
        "token",
        "secret",
        "authorization",
        "credential",
        "credentials",
    ];
    const HARMLESS: [&str; 4] = ["prefix", "id", "hash", "type"];
    let secret = words.iter().any(|w| SECRET.contains(&w.as_str()));
    let harmless = words.last().is_some_and(|w| HARMLESS.contains(&w.as_str()));
    secret && !harmless
}

/// Redacts secret members at every depth, and keys inside any string.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            // A key used as a member's name is not kept either.
            if members.keys().any(|name| redact_text(name) != *name) {
                *members = std::mem::take(members)
                    .into_iter()
                    .map(|(name, member)| (redact_text(&name), member))
                    .collect();
            }
            for (name, member) in members.iter_mut() {
                // A null stays null (in a merge patch it removes the member).
                if is_secret_name(name) && !member.is_null() {
                    *member = serde_json::Value::String("[REDACTED]".into());
                } else {
                    redact_json(member);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::String(text) => {
            let redacted = redact_text(text);
            if redacted != *text {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// Keys of both shapes and tokens in free text become their display prefix; a NUL character
/// (which PostgreSQL's text cannot hold) becomes U+FFFD, like bytes that are not UTF-8.
pub fn redact_text(text: &str) -> String {
    redact_legacy_keys(&redact_tokens(&redact_license_keys(text))).replace('\0', "\u{FFFD}")
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Refresh tokens (`klr_` and 43 base64url characters) and JWTs (`eyJ…` in three
/// dot-separated base64url parts) in free text become their first characters and `…`.
fn redact_tokens(text: &str) -> Cow<'_, str> {
    if !text.contains(REFRESH_PREFIX) && !text.contains(JWT_START) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let run = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| is_base64url(**b))
            .count()
    };
    // The end of the token starting at `i`, when one does.
    let token_end = |i: usize| -> Option<usize> {
        if i > 0 && is_base64url(bytes[i - 1]) {
            return None;
        }
        let rest = &text[i..];
        if rest.starts_with(REFRESH_PREFIX) {
            let body = run(i + REFRESH_PREFIX.len());
            return (body >= MIN_BODY).then_some(i + REFRESH_PREFIX.len() + body);
        }
        if rest.starts_with(JWT_START) {
            let header = run(i);
            let mut end = i + header;
            for _ in 0..2 {
                if bytes.get(end) != Some(&b'.') {
                    return None;
                }
                end += 1 + run(end + 1);
            }
            return (header >= MIN_BODY).then_some(end);
        }
        None
    };
    shorten_tokens(text, token_end)
}

/// Refresh tokens' prefix.
const REFRESH_PREFIX: &str = "klr_";
/// Every JWT starts so: the base64url of `{"`.
const JWT_START: &str = "eyJ";

/// A body as stored in the request log: redacted (as JSON when it parses), then cut to
/// `limit` characters.
pub fn redact_body(body: &[u8], limit: usize) -> String {
    let text = std::str::from_utf8(body)
        .ok()
        .and_then(redact_json_as_sent)
        .unwrap_or_else(|| redact_text(&redact_json_text(&String::from_utf8_lossy(body))));
    truncate(&text, limit)
}

/// JSON text redacted as [`redact_json`] redacts its value, but otherwise as it was sent: the
/// members in their order, every number with its digits (a parse into a `Value` would sort
/// the one and round the other: `123456789012345678901234567890` would read
/// `1.2345678901234568e+29`). Whitespace between tokens is dropped, and strings are written
/// with JSON's shortest escapes. `None` when the text is not JSON.
///
/// One pass over the text once it is known to be JSON: only strings are decoded (so a
/// secret's name or a key written with `\u` escapes is still found); everything outside them
/// (structure, numbers, literals) is ASCII and is copied as it is.
pub fn redact_json_as_sent(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let bytes = text.as_bytes();
    let skip_space = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(text, i);
                let string: String = serde_json::from_str(&text[i..end]).ok()?;
                let colon = skip_space(end);
                if bytes.get(colon) == Some(&b':') {
                    // A member's name (a key used as one is redacted); its value follows.
                    out.push_str(&serde_json::to_string(&redact_text(&string)).ok()?);
                    out.push(':');
                    let start = skip_space(colon + 1);
                    let stop = value_end(text, start);
                    // A null stays null, as in `redact_json`.
                    if is_secret_name(&string) && &text[start..stop] != "null" {
                        out.push_str("\"[REDACTED]\"");
                        i = stop;
                    } else {
                        i = start;
                    }
                } else {
                    out.push_str(&serde_json::to_string(&redact_text(&string)).ok()?);
                    i = end;
                }
            }
            byte if byte.is_ascii_whitespace() => i += 1,
            byte => {
                out.push(char::from(byte));
                i += 1;
            }
        }
    }
    Some(out)
}

/// The first bytes of a longer body, as stored in the request log: secret-named members
/// redacted without parsing (the text is cut short, so it is not valid JSON), a token cut at
/// the end dropped (it could be the start of a key), keys redacted, cut to `limit` characters
/// and always marked as truncated.
pub fn redact_body_prefix(prefix: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(prefix);
    // A key cut at the end is shorter than this; a longer run ends past any key's start.
    const CUT_TOKEN: usize = 64;
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\u{fffd}');
    let run = text.chars().rev().take_while(|c| token(*c)).take(CUT_TOKEN);
    let dropped: usize = run.map(char::len_utf8).sum();
    let whole_tokens = &text[..text.len() - dropped];
    let redacted = redact_text(&redact_json_text(whole_tokens));
    let cut = truncate(&redacted, limit);
    if cut.ends_with(TRUNCATED) {
        cut
    } else {
        format!("{cut}{TRUNCATED}")
    }
}

/// The end of the JSON string starting at `start` (a `"`): the index after its closing quote,
/// or the end of the text.
fn string_end(text: &str, start: usize) -> usize {
    let mut chars = text[start + 1..].char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => {
                chars.next();
            }
            '"' => return start + 1 + i + 1,
            _ => {}
        }
    }
    text.len()
}

/// The end of the JSON value starting at `start`: a string, an object or array (to its
/// matching close), or a scalar (to the next delimiter); the end of the text if cut short.
fn value_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    match bytes.get(start) {
        Some(b'"') => string_end(text, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(text, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            text.len()
        }
        _ => bytes[start..]
            .iter()
            .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
            .map_or(text.len(), |n| start + n),
    }
}

/// Secret-named members of JSON text become `"[REDACTED]"` without parsing it, so text that
/// is cut short or malformed is redacted too; everything else is kept as it is.
pub fn redact_json_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(text, i);
        let closed = end - i >= 2 && bytes[end - 1] == b'"';
        let name_text = &text[i..end];
        let mut colon = end;
        while colon < bytes.len() && bytes[colon].is_ascii_whitespace() {
            colon += 1;
        }
        if !closed || bytes.get(colon) != Some(&b':') {
            i = end;
            continue;
        }
        let name = serde_json::from_str::<String>(name_text)
            .unwrap_or_else(|_| name_text[1..name_text.len() - 1].to_owned());
        let mut start = colon + 1;
        while start < bytes.len() && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        let stop = value_end(text, start);
        // A null stays null, as in `redact_json`.
        if is_secret_name(&name) && start < bytes.len() && &text[start..stop] != "null" {
            out.push_str(&text[copied..start]);
            out.push_str("\"[REDACTED]\"");
            copied = stop;
            i = stop;
        } else {
            // Not a secret: look inside its value too.
            i = colon + 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

const TRUNCATED: &str = "…[truncated]";

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}{TRUNCATED}", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_members_are_redacted_at_every_depth() {
        let mut value = json!({
            "key": "lic_abc", "Password": "hunter2", "nested": {"api_key": "x", "accessToken": "y",
            "list": [{"client_secret": "z"}], "Authorization": "Bearer t"},
            "key_prefix": "lic_4vJ9hGq2", "owner": "acme", "token_id": 7
        });
        redact_json(&mut value);
        assert_eq!(value["key"], "[REDACTED]");
        assert_eq!(value["Password"], "[REDACTED]");
        assert_eq!(value["nested"]["api_key"], "[REDACTED]");
        assert_eq!(value["nested"]["accessToken"], "[REDACTED]");
        assert_eq!(value["nested"]["list"][0]["client_secret"], "[REDACTED]");
        assert_eq!(value["nested"]["Authorization"], "[REDACTED]");
        assert_eq!(value["key_prefix"], "lic_4vJ9hGq2");
        assert_eq!(value["owner"], "acme");
        assert_eq!(value["token_id"], 7);
    }

    #[test]
    fn keys_anywhere_in_a_body_become_their_prefix() {
        let body = br#"{"note": "customer sent lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ and K3DEG-ZDPCF-54ERF-5DHQD-3DQCJ"}"#;
        let stored = redact_body(body, 2000);
        assert!(stored.contains("lic_4vJ9hGq2…"), "{stored}");
        assert!(stored.contains("K3DEG-…"), "{stored}");
        assert!(!stored.contains("r7mXkP3sT8"));
        assert!(!stored.contains("ZDPCF"));
        let text = redact_body(b"plain K3DEG-ZDPCF-54ERF-5DHQD-3DQCJ text", 2000);
        assert_eq!(text, "plain K3DEG-… text");
    }

    #[test]
    fn a_json_body_is_stored_as_sent_but_for_its_secrets() {
        let body = br#"{"owner": "acme", "tier": "pro",
            "metadata": {"n": 123456789012345678901234567890, "f": 1.10, "e": -1E+2, "z": -0},
            "password": "hunter2", "secret": null, "note": "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ",
            "list": [true, null, {"api_key": "x"}], "esc": "caf\u00e9 \"q\""}"#;
        assert_eq!(
            redact_body(body, 2000),
            r#"{"owner":"acme","tier":"pro","metadata":{"n":123456789012345678901234567890,"f":1.10,"e":-1E+2,"z":-0},"password":"[REDACTED]","secret":null,"note":"lic_4vJ9hGq2…","list":[true,null,{"api_key":"[REDACTED]"}],"esc":"café \"q\""}"#
        );
        // A secret's name written with escapes is still its name.
        assert_eq!(
            redact_body(br#"{"pass\u0077ord": "hunter2"}"#, 2000),
            r#"{"password":"[REDACTED]"}"#
        );
        // So is a key written with escapes.
        let escaped = br#"["lic_\u0034vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ"]"#;
        assert_eq!(redact_body(escaped, 2000), r#"["lic_4vJ9hGq2…"]"#);
    }

    #[test]
    fn bodies_are_cut_to_the_limit() {
        let stored = redact_body("é".repeat(50).as_bytes(), 10);
        assert_eq!(stored, format!("{}…[truncated]", "é".repeat(10)));
    }

    #[test]
    fn secret_members_of_cut_or_malformed_json_are_redacted() {
        let text = r#"{"user": "ann", "password": "hunter2", "nested": {"api_token": {"a": [1, "x"]}, "ok": 1}, "secret": null, "token_id": 7, "note": "a \"password\": no"#;
        let redacted = redact_json_text(text);
        assert_eq!(
            redacted,
            r#"{"user": "ann", "password": "[REDACTED]", "nested": {"api_token": "[REDACTED]", "ok": 1}, "secret": null, "token_id": 7, "note": "a \"password\": no"#
        );
        assert_eq!(
            redact_json_text(r#"{"a": 1, "client_secret": "s3cr"#),
            r#"{"a": 1, "client_secret": "[REDACTED]""#
        );
    }

    #[test]
    fn a_body_prefix_is_redacted_marked_and_loses_a_key_cut_in_half() {
        let body = br#"{"password": "hunter2", "note": "lic_4vJ9hGq2r7mXkP3sT8w"#;
        let stored = redact_body_prefix(body, 2000);
        assert_eq!(
            stored,
            r#"{"password": "[REDACTED]", "note": "…[truncated]"#
        );
        let stored = redact_body_prefix(b"plain text K3DEG-ZDPCF-54E", 2000);
        assert_eq!(stored, "plain text …[truncated]");
        let stored = redact_body_prefix("é".repeat(50).as_bytes(), 10);
        assert_eq!(stored, format!("{}…[truncated]", "é".repeat(10)));
        // A long run keeps its start.
        let long = format!(r#"{{"blob": "{}"#, "a".repeat(100));
        let stored = redact_body_prefix(long.as_bytes(), 2000);
        assert_eq!(
            stored,
            format!(r#"{{"blob": "{}…[truncated]"#, "a".repeat(36))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("password".to_owned()),
                Just("api_key".to_owned()),
                Just("accessToken".to_owned()),
                Just("token_id".to_owned()),
                Just("key_prefix".to_owned()),
                "[a-z_]{1,8}",
            ]
        }

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                // Quarters: exact in binary, so parsing cannot round them.
                any::<i32>().prop_map(|n| serde_json::Value::from(f64::from(n) / 4.0)),
                "[a-z \"\\\\:,{}\\[\\]é]{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(name(), inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Redacting the text gives what redacting the parsed value gives.
            #[test]
            fn text_redaction_agrees_with_value_redaction(value in json(), pretty in any::<bool>()) {
                let text = if pretty {
                    serde_json::to_string_pretty(&value).unwrap()
                } else {
                    value.to_string()
                };
                let from_text: serde_json::Value =
                    serde_json::from_str(&redact_json_text(&text)).unwrap();
                let mut expected = value;
                redact_json(&mut expected);
                prop_assert_eq!(from_text, expected);
            }

            /// Redacting JSON as sent gives what redacting the parsed value gives.
            #[test]
            fn redaction_as_sent_agrees_with_value_redaction(value in json(), pretty in any::<bool>()) {
                let text = if pretty {
                    serde_json::to_string_pretty(&value).unwrap()
                } else {
                    value.to_string()
                };
                let as_sent: serde_json::Value =
                    serde_json::from_str(&redact_json_as_sent(&text).unwrap()).unwrap();
                let mut expected = value;
                redact_json(&mut expected);
                prop_assert_eq!(as_sent, expected);
            }

            /// Without secrets, JSON is stored as it was sent: its members in their order and
            /// each number as written, however many digits it has.
            #[test]
            fn json_without_secrets_is_stored_as_sent(
                members in prop::collection::vec(
                    (
                        "[a-z]{1,8}".prop_filter("not a secret", |n| !is_secret_name(n)),
                        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
                    ),
                    0..8,
                ),
                spaced in any::<bool>(),
            ) {
                let (colon, comma) = if spaced { (": ", ",\n  ") } else { (":", ",") };
                let join = |colon: &str, comma: &str| {
                    let members: Vec<String> = members
                        .iter()
                        .map(|(name, number)| format!("\"{name}\"{colon}{number}"))
                        .collect();
                    format!("{{{}}}", members.join(comma))
                };
                let sent = join(colon, comma);
                prop_assert_eq!(redact_json_as_sent(&sent), Some(join(":", ",")));
            }

            /// Wherever a body is cut, a secret member's value is never stored.
            #[test]
            fn no_cut_of_a_body_shows_a_secret(value in json(), secret in "[A-Z]{6}[0-9]{4}") {
                let body = serde_json::json!({"before": value, "password": secret, "after": 1})
                    .to_string();
                for cut in 0..=body.len() {
                    if body.is_char_boundary(cut) {
                        let stored = redact_body_prefix(&body.as_bytes()[..cut], 1_000_000);
                        prop_assert!(!stored.contains(&secret), "{}", stored);
                    }
                }
            }
        }
    }

    #[test]
    fn keys_in_text_become_their_display_prefix() {
        let key = "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ";
        let text = format!("unknown variant `{key}`, expected one of");
        assert_eq!(
            redact_license_keys(&text),
            "unknown variant `lic_4vJ9hGq2…`, expected one of"
        );
        let api_key = crate::api_key::ApiKeySecret::generate().unwrap();
        let text = format!("Bearer {}", api_key.expose());
        assert_eq!(
            redact_text(&text),
            format!("Bearer {}…", api_key.display_prefix())
        );
    }

    #[test]
    fn refresh_tokens_and_jwts_in_text_become_their_first_characters() {
        let refresh = format!("klr_{}", "Ab-_9".repeat(9));
        let jwt = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLWJ5dGVz";
        let text = format!("retry with {refresh}, Bearer {jwt} failed");
        assert_eq!(
            redact_text(&text),
            "retry with klr_Ab-_9Ab-…, Bearer eyJhbGciOiJF… failed"
        );
        // Short runs and a lone header are not tokens.
        for plain in [
            "klr_short",
            "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9 alone",
            "keyJ.a.b",
        ] {
            assert_eq!(redact_text(plain), plain);
        }
    }

    #[test]
    fn a_key_used_as_a_members_name_is_redacted() {
        let key = "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ";
        let mut value = serde_json::json!({ key: 1, "ok": {key: [key]} });
        redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"lic_4vJ9hGq2…": 1, "ok": {"lic_4vJ9hGq2…": ["lic_4vJ9hGq2…"]}})
        );
        let body = format!(r#"{{"{key}": 1}}"#);
        assert_eq!(redact_body(body.as_bytes(), 2000), r#"{"lic_4vJ9hGq2…":1}"#);
    }

    #[test]
    fn text_without_keys_is_untouched() {
        assert_eq!(
            redact_license_keys("lic_short and ünïcode"),
            "lic_short and ünïcode"
        );
    }
}
