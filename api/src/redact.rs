//! Redaction of license keys in free text (error details, log lines): a key becomes its
//! display prefix followed by `…`.

use std::borrow::Cow;

const KEY_PREFIX: &str = "lic_";
/// Characters of the key body kept, as in the stored display prefix.
const KEPT: usize = 8;
/// Shorter runs are not keys (a key body is about 49 characters).
const MIN_BODY: usize = 20;

fn is_base58(b: u8) -> bool {
    b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l')
}

/// Replaces every `lic_…` key in `text` with its display prefix.
pub fn redact_license_keys(text: &str) -> Cow<'_, str> {
    if !text.contains(KEY_PREFIX) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if text[i..].starts_with(KEY_PREFIX) {
            let body_start = i + KEY_PREFIX.len();
            let body_len = bytes[body_start..]
                .iter()
                .take_while(|b| is_base58(**b))
                .count();
            if body_len >= MIN_BODY {
                out.push_str(&text[i..body_start + KEPT]);
                out.push('…');
                i = body_start + body_len;
                changed = true;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::redact_license_keys;

    #[test]
    fn keys_in_text_become_their_display_prefix() {
        let key = "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ";
        let text = format!("unknown variant `{key}`, expected one of");
        assert_eq!(
            redact_license_keys(&text),
            "unknown variant `lic_4vJ9hGq2…`, expected one of"
        );
    }

    #[test]
    fn text_without_keys_is_untouched() {
        assert_eq!(
            redact_license_keys("lic_short and ünïcode"),
            "lic_short and ünïcode"
        );
    }
}
