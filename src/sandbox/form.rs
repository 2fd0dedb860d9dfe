//! Strict parsing of `application/x-www-form-urlencoded` bodies and query strings.
//!
//! Lenient parsers hide exactly the bugs the sandbox exists to catch: a value encoded twice still
//! parses (to the wrong value, which the grant check then rejects), but a broken escape, a
//! repeated parameter or a `;` separator are refused outright, as a careful server does.

use std::collections::HashMap;

/// Why a form could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the form")]
    BadEscape,
    /// A name or value that does not decode to UTF-8.
    #[error("form value is not valid utf-8")]
    NotUtf8,
    /// `;` as a separator, which old parsers accepted and current ones refuse.
    #[error("a semicolon is not a form separator")]
    Semicolon,
    /// The same name twice: which one counts would be a guess.
    #[error("parameter {0} is given more than once")]
    Repeated(String),
}

/// A parsed form: each name at most once, each value percent-decoded exactly once.
#[derive(Debug, Default)]
pub(super) struct Form {
    fields: HashMap<String, String>,
}

impl Form {
    /// Parses a body or a query string. Empty segments (`a=1&&b=2`) are skipped and a name
    /// without `=` has an empty value, as common servers do.
    pub(super) fn parse(input: &[u8]) -> Result<Form, FormError> {
        let mut fields = HashMap::new();
        for segment in input.split(|&b| b == b'&') {
            if segment.is_empty() {
                continue;
            }
            if segment.contains(&b';') {
                return Err(FormError::Semicolon);
            }
            let (name, value) = match segment.iter().position(|&b| b == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &[][..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if fields.contains_key(&name) {
                return Err(FormError::Repeated(name));
            }
            fields.insert(name, value);
        }
        Ok(Form { fields })
    }

    /// The value of `name`. An empty value counts as missing, as it does at TikTok.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let (high, low) = match rest {
                    [high, low, ..] => (hex_digit(*high), hex_digit(*low)),
                    _ => (None, None),
                };
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(FormError::BadEscape);
                };
                decoded.push(high << 4 | low);
                rest = &rest[2..];
            }
            other => decoded.push(other),
        }
    }
    String::from_utf8(decoded).map_err(|_| FormError::NotUtf8)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exactly_once() {
        let form = Form::parse(b"code=a%2Ab%21c.va&double=%252A&space=a+b").unwrap();
        assert_eq!(form.get("code"), Some("a*b!c.va"));
        assert_eq!(form.get("double"), Some("%2A"));
        assert_eq!(form.get("space"), Some("a b"));
    }

    #[test]
    fn empty_values_count_as_missing() {
        let form = Form::parse(b"a=&b&&c=1").unwrap();
        assert_eq!(form.get("a"), None);
        assert_eq!(form.get("b"), None);
        assert_eq!(form.fields.len(), 3);
        assert_eq!(form.get("c"), Some("1"));
    }

    #[test]
    fn refuses_what_a_careful_server_refuses() {
        assert_eq!(
            Form::parse(b"a=1&a=2").unwrap_err(),
            FormError::Repeated("a".into())
        );
        assert_eq!(
            Form::parse(b"a=1&%61=2").unwrap_err(),
            FormError::Repeated("a".into())
        );
        assert_eq!(Form::parse(b"a=%zz").unwrap_err(), FormError::BadEscape);
        assert_eq!(Form::parse(b"a=%2").unwrap_err(), FormError::BadEscape);
        assert_eq!(Form::parse(b"a=1;b=2").unwrap_err(), FormError::Semicolon);
        assert_eq!(Form::parse(b"a=%ff").unwrap_err(), FormError::NotUtf8);
    }
}
