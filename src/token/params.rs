//! Reading a token request: its body's parameters and the client's credentials.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode;
use serde::de::{Deserializer, MapAccess, Visitor};

use crate::oauth_error::OAuthError;

/// A request's parameters: each given at most once, empty values dropped (an empty value
/// counts as missing).
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`, or `invalid_request` naming it.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter `{name}` is missing")))
    }

    fn from_pairs(pairs: Vec<(String, Option<String>)>) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in pairs {
            if !seen.insert(name.clone()) {
                let description = format!("parameter `{name}` is repeated");
                return Err(OAuthError::invalid_request(description));
            }
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                params.insert(name, value);
            }
        }
        Ok(Self(params))
    }
}

/// The media types a token request may use.
enum BodyType {
    Form,
    Json,
}

/// Parses `body` by its `Content-Type`: a form, as Auth0 sends, or a JSON object.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    let pairs = match body_type(headers)? {
        BodyType::Form => parse_form(body)?,
        BodyType::Json => parse_json(body)?,
    };
    Params::from_pairs(pairs)
}

fn body_type(headers: &HeaderMap) -> Result<BodyType, OAuthError> {
    let wrong = || {
        OAuthError::invalid_request(
            "content type must be application/x-www-form-urlencoded or application/json",
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(wrong)?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyType::Form)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyType::Json)
    } else {
        Err(wrong())
    }
}

/// Decodes a form body strictly: `+` is a space, each `%XX` is decoded once, and the result
/// must be UTF-8, so a value reaches TikTok exactly as Auth0 meant it.
fn parse_form(body: &[u8]) -> Result<Vec<(String, Option<String>)>, OAuthError> {
    body.split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |byte| *byte == b'=');
            let name = decode_form_component(parts.next().unwrap_or_default())?;
            let value = decode_form_component(parts.next().unwrap_or_default())?;
            Ok((name, Some(value)))
        })
        .collect()
}

fn decode_form_component(raw: &[u8]) -> Result<String, OAuthError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|byte| if *byte == b'+' { b' ' } else { *byte })
        .collect();
    let decoded: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(decoded)
        .map_err(|_| OAuthError::invalid_request("form body is not valid UTF-8"))
}

/// The parameters the proxy reads; in a JSON body these must be strings (or null).
const READ_PARAMETERS: [&str; 7] = [
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
];

/// Reads a JSON object, keeping repeated keys so that they can be refused like repeated form
/// parameters. The parameters the proxy reads must be strings (null counts as missing); other
/// members may hold anything, since they are ignored like unknown form parameters.
fn parse_json(body: &[u8]) -> Result<Vec<(String, Option<String>)>, OAuthError> {
    struct PairsVisitor;

    impl<'de> Visitor<'de> for PairsVisitor {
        type Value = Vec<(String, serde_json::Value)>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry::<String, serde_json::Value>()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let pairs = deserializer
        .deserialize_map(PairsVisitor)
        .and_then(|pairs| deserializer.end().map(|()| pairs))
        .map_err(|error| {
            // serde_json's messages name positions and types, never the content.
            OAuthError::invalid_request(format!("JSON body is not an object: {error}"))
        })?;

    pairs
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok((name, Some(text))),
            serde_json::Value::Null => Ok((name, None)),
            _ if READ_PARAMETERS.contains(&name.as_str()) => Err(OAuthError::invalid_request(
                format!("parameter `{name}` must be a string"),
            )),
            _ => Ok((name, None)),
        })
        .collect()
}

/// The client's identity and secret, from the body or from HTTP Basic.
#[derive(Debug)]
pub struct ClientCredentials {
    /// `client_id`: the TikTok client key.
    pub id: String,
    /// `client_secret`: Auth0's secret for the app.
    pub secret: String,
    /// Whether HTTP Basic was used, which owes a `WWW-Authenticate` challenge on failure.
    pub via_basic: bool,
}

/// The client credentials of a request, `None` when some are missing.
///
/// Credentials may come in the body (what Auth0 sends) or in HTTP Basic (RFC 6749 2.3.1: id
/// and secret form-urlencoded, then joined by `:` and base64-encoded). Both at once are fine
/// when they agree, and an `invalid_request` when they do not.
pub fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<Option<ClientCredentials>, OAuthError> {
    let basic = basic_credentials(headers)?;
    let via_basic = basic.is_some();
    let (basic_id, basic_secret) = match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (None, None),
    };

    let id = agree("client_id", basic_id, params.get("client_id"))?;
    let secret = agree("client_secret", basic_secret, params.get("client_secret"))?;
    Ok(id.zip(secret).map(|(id, secret)| ClientCredentials {
        id,
        secret,
        via_basic,
    }))
}

fn agree(
    name: &str,
    from_basic: Option<String>,
    from_body: Option<&str>,
) -> Result<Option<String>, OAuthError> {
    match (from_basic.filter(|value| !value.is_empty()), from_body) {
        (Some(basic), Some(body)) if basic != body => Err(OAuthError::invalid_request(format!(
            "`{name}` in the Authorization header and in the body disagree"
        ))),
        (Some(value), _) => Ok(Some(value)),
        (None, body) => Ok(body.map(str::to_owned)),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        OAuthError::invalid_client("the Authorization header is not valid HTTP Basic")
            .with_basic_challenge()
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        // Another scheme may be meant for something in front of the proxy; credentials
        // then have to come in the body.
        return Ok(None);
    }

    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let Some(colon) = decoded.iter().position(|byte| *byte == b':') else {
        return Err(malformed());
    };
    let id = decode_form_component(&decoded[..colon]).map_err(|_| malformed())?;
    let secret = decode_form_component(&decoded[colon + 1..]).map_err(|_| malformed())?;
    Ok(Some((id, secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        headers.insert(header::CONTENT_TYPE, form);
        headers
    }

    #[test]
    fn form_values_are_decoded_once() {
        let params = parse_body(&form_headers(), b"code=a%2Ab*c!d.e%2521&x=a+b").unwrap();
        assert_eq!(params.get("code"), Some("a*b*c!d.e%21"));
        assert_eq!(params.get("x"), Some("a b"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let error = parse_body(&form_headers(), b"code=a&code=b").unwrap_err();
        assert_eq!(error.error(), "invalid_request");
        assert!(error.description().contains("`code` is repeated"));
    }

    #[test]
    fn empty_values_count_as_missing() {
        let params = parse_body(&form_headers(), b"code=&state").unwrap();
        assert_eq!(params.get("code"), None);
        assert!(params.require("code").is_err());
    }

    #[test]
    fn json_bodies_need_string_values_and_unique_keys() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(
            parse_body(&headers, br#"{"a":"1"}"#).unwrap().get("a"),
            Some("1")
        );
        assert!(parse_body(&headers, br#"{"a":"1","a":"2"}"#).is_err());
        assert!(parse_body(&headers, br#"{"code":1}"#).is_err());
        assert!(parse_body(&headers, br#"{"a":1,"b":[true]}"#).is_ok());
        assert!(parse_body(&headers, br#"["a"]"#).is_err());
        assert!(parse_body(&headers, br#"{"a":"1"} x"#).is_err());
    }

    #[test]
    fn other_content_types_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(parse_body(&headers, b"a=1").is_err());
        assert!(parse_body(&HeaderMap::new(), b"a=1").is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = form_headers();
        let encoded = STANDARD.encode("my%3Aapp:s+e%25cret");
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        let credentials = client_credentials(&headers, &Params::default())
            .unwrap()
            .unwrap();
        assert_eq!(credentials.id, "my:app");
        assert_eq!(credentials.secret, "s e%cret");
        assert!(credentials.via_basic);
    }

    #[test]
    fn disagreeing_credentials_are_refused() {
        let mut headers = form_headers();
        let value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("a:b"))).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        let params = parse_body(&form_headers(), b"client_id=other").unwrap();
        let error = client_credentials(&headers, &params).unwrap_err();
        assert_eq!(error.error(), "invalid_request");
    }
}
