//! Codes and tokens: what the sandbox issued, to whom, and what is still live.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::{CodeGrant, ids};

/// The one user who consents to everything in the sandbox. Ids derive from this name, so they
/// stay stable across restarts.
pub(super) const SANDBOX_USER: &str = "sandbox-user";

/// Access tokens live 24 hours at TikTok.
const ACCESS_TOKEN_SECONDS: u64 = 86_400;

/// Refresh tokens live 365 days at TikTok.
const REFRESH_TOKEN_SECONDS: u64 = 31_536_000;

/// How many codes, access tokens and refresh tokens are kept each. A benchmark that exchanges
/// and refreshes for hours must not grow the sandbox without bound; beyond this the oldest are
/// forgotten, long after any test or login flow has used them.
const MAX_LIVE: usize = 100_000;

/// Whether `scope` is what TikTok accepts: non-empty names separated by commas, no whitespace.
pub(super) fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .split(',')
            .all(|name| !name.is_empty() && !name.contains(char::is_whitespace))
}

/// One user's consent to one app, shared by the tokens it produced so that revoking one token
/// can find its siblings.
#[derive(Debug)]
pub(super) struct Authorization {
    id: u64,
    pub(super) client_key: String,
    /// Comma-separated, as granted.
    pub(super) scope: String,
    pub(super) open_id: String,
}

impl Authorization {
    /// Whether the user granted `scope` to the app.
    pub(super) fn grants(&self, scope: &str) -> bool {
        self.scope.split(',').any(|granted| granted == scope)
    }
}

/// TikTok's token answer: flat JSON, fields in the order TikTok sends them.
#[derive(Debug, Serialize)]
pub(super) struct TokenBody {
    pub(super) access_token: String,
    pub(super) expires_in: u64,
    pub(super) open_id: String,
    pub(super) refresh_expires_in: u64,
    pub(super) refresh_token: String,
    pub(super) scope: String,
    pub(super) token_type: &'static str,
}

impl TokenBody {
    /// A token answer that looks real but whose tokens were never issued: what faults send when
    /// the body's shape matters and its validity does not.
    pub(super) fn unregistered() -> TokenBody {
        TokenBody {
            access_token: ids::access_token(),
            expires_in: ACCESS_TOKEN_SECONDS,
            open_id: ids::open_id("unregistered", SANDBOX_USER),
            refresh_expires_in: REFRESH_TOKEN_SECONDS,
            refresh_token: ids::refresh_token(),
            scope: super::DEFAULT_SCOPE.to_owned(),
            token_type: "Bearer",
        }
    }
}

/// Why a grant was refused. The message is the `error_description` sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum Rejection {
    #[error("authorization code is invalid, expired or already used")]
    UnknownCode,
    #[error("authorization code was issued to another client_key")]
    CodeOfAnotherClient,
    #[error("redirect_uri does not match the one used to obtain the authorization code")]
    RedirectMismatch,
    #[error("code_verifier is required: the authorization code was issued with a code_challenge")]
    MissingVerifier,
    #[error("code_verifier does not match the code_challenge")]
    VerifierMismatch,
    #[error("refresh token is invalid, expired or already used")]
    UnknownRefreshToken,
    #[error("refresh token was issued to another client_key")]
    RefreshTokenOfAnotherClient,
}

impl Rejection {
    /// The OAuth error category TikTok would send.
    pub(super) fn category(&self) -> &'static str {
        match self {
            Rejection::MissingVerifier => "invalid_request",
            _ => "invalid_grant",
        }
    }
}

/// Live codes and tokens.
#[derive(Default)]
pub(super) struct Grants {
    codes: BoundedMap<CodeGrant>,
    access_tokens: BoundedMap<Arc<Authorization>>,
    refresh_tokens: BoundedMap<Arc<Authorization>>,
    next_authorization_id: u64,
}

impl Grants {
    /// Issues a single-use code for an already validated grant.
    pub(super) fn issue_code(&mut self, grant: CodeGrant) -> String {
        let code = ids::authorization_code();
        self.codes.insert(code.clone(), grant);
        code
    }

    /// Exchanges a code. The code is spent by any attempt from the client it was issued to, even
    /// a failing one: a code is single-use, and an attacker who guesses wrong must not get to
    /// try again. An attempt by another client leaves it alone, so that client cannot burn it.
    pub(super) fn redeem_code(
        &mut self,
        client_key: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
    ) -> Result<TokenBody, Rejection> {
        let grant = self.codes.get(code).ok_or(Rejection::UnknownCode)?;
        if grant.client_key != client_key {
            return Err(Rejection::CodeOfAnotherClient);
        }
        let grant = self.codes.remove(code).ok_or(Rejection::UnknownCode)?;

        if grant.redirect_uri != redirect_uri {
            return Err(Rejection::RedirectMismatch);
        }
        if let Some(challenge) = &grant.code_challenge {
            let verifier = code_verifier.ok_or(Rejection::MissingVerifier)?;
            if ids::code_challenge_of(verifier) != *challenge {
                return Err(Rejection::VerifierMismatch);
            }
        }

        self.next_authorization_id += 1;
        let authorization = Arc::new(Authorization {
            id: self.next_authorization_id,
            open_id: ids::open_id(client_key, SANDBOX_USER),
            client_key: grant.client_key,
            scope: grant.scope,
        });
        Ok(self.issue_tokens(authorization))
    }

    /// Refreshes: the old refresh token dies and a new one is issued with the new access token
    /// (rotation), so a client that keeps the old one finds out at once.
    pub(super) fn refresh(
        &mut self,
        client_key: &str,
        refresh_token: &str,
    ) -> Result<TokenBody, Rejection> {
        let authorization = self
            .refresh_tokens
            .get(refresh_token)
            .ok_or(Rejection::UnknownRefreshToken)?;
        if authorization.client_key != client_key {
            return Err(Rejection::RefreshTokenOfAnotherClient);
        }
        let authorization = self
            .refresh_tokens
            .remove(refresh_token)
            .ok_or(Rejection::UnknownRefreshToken)?;
        Ok(self.issue_tokens(authorization))
    }

    /// Revokes `token` (access or refresh) and every other token of the same consent, if it
    /// belongs to `client_key`. Unknown tokens are ignored, as RFC 7009 asks.
    pub(super) fn revoke(&mut self, client_key: &str, token: &str) {
        let Some(authorization) = self
            .access_tokens
            .get(token)
            .or(self.refresh_tokens.get(token))
        else {
            return;
        };
        if authorization.client_key != client_key {
            return;
        }
        let id = authorization.id;
        self.access_tokens.retain(|candidate| candidate.id != id);
        self.refresh_tokens.retain(|candidate| candidate.id != id);
    }

    /// The consent behind a live access token.
    pub(super) fn access(&self, access_token: &str) -> Option<Arc<Authorization>> {
        self.access_tokens.get(access_token).cloned()
    }

    fn issue_tokens(&mut self, authorization: Arc<Authorization>) -> TokenBody {
        let body = TokenBody {
            access_token: ids::access_token(),
            expires_in: ACCESS_TOKEN_SECONDS,
            open_id: authorization.open_id.clone(),
            refresh_expires_in: REFRESH_TOKEN_SECONDS,
            refresh_token: ids::refresh_token(),
            scope: authorization.scope.clone(),
            token_type: "Bearer",
        };
        self.access_tokens
            .insert(body.access_token.clone(), Arc::clone(&authorization));
        self.refresh_tokens
            .insert(body.refresh_token.clone(), authorization);
        body
    }
}

/// A map that forgets its oldest insertions beyond [`MAX_LIVE`]. Keys are random and never
/// reused, so the insertion order alone decides what goes.
struct BoundedMap<V> {
    entries: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for BoundedMap<V> {
    fn default() -> Self {
        BoundedMap {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> BoundedMap<V> {
    fn insert(&mut self, key: String, value: V) {
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
        while self.order.len() > MAX_LIVE {
            // The oldest key may already be gone (spent or revoked); removing it is then a no-op.
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.entries.remove(key)
    }

    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, value| keep(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(challenge: Option<String>) -> CodeGrant {
        CodeGrant {
            client_key: "app".into(),
            redirect_uri: "https://example.test/cb".into(),
            scope: "user.info.basic,user.info.stats".into(),
            code_challenge: challenge,
        }
    }

    #[test]
    fn scope_syntax() {
        assert!(is_valid_scope("user.info.basic"));
        assert!(is_valid_scope("user.info.basic,user.info.profile"));
        assert!(!is_valid_scope(""));
        assert!(!is_valid_scope("user.info.basic user.info.profile"));
        assert!(!is_valid_scope("user.info.basic,"));
    }

    #[test]
    fn code_is_single_use_and_spent_by_a_failed_attempt() {
        let mut grants = Grants::default();
        let code = grants.issue_code(grant(None));
        assert_eq!(
            grants
                .redeem_code("app", &code, "https://other.test/cb", None)
                .unwrap_err(),
            Rejection::RedirectMismatch
        );
        assert_eq!(
            grants
                .redeem_code("app", &code, "https://example.test/cb", None)
                .unwrap_err(),
            Rejection::UnknownCode
        );
    }

    #[test]
    fn another_client_cannot_burn_a_code() {
        let mut grants = Grants::default();
        let code = grants.issue_code(grant(None));
        let other = grants.redeem_code("other", &code, "https://example.test/cb", None);
        assert_eq!(other.unwrap_err(), Rejection::CodeOfAnotherClient);
        let tokens = grants
            .redeem_code("app", &code, "https://example.test/cb", None)
            .unwrap();
        assert_eq!(tokens.scope, "user.info.basic,user.info.stats");
    }

    #[test]
    fn pkce_checks_hex_challenge() {
        let mut grants = Grants::default();
        let challenge = ids::code_challenge_of("verifier");
        let redirect = "https://example.test/cb";

        let code = grants.issue_code(grant(Some(challenge.clone())));
        let missing = grants
            .redeem_code("app", &code, redirect, None)
            .unwrap_err();
        assert_eq!(missing.category(), "invalid_request");

        let code = grants.issue_code(grant(Some(challenge.clone())));
        let wrong = grants
            .redeem_code("app", &code, redirect, Some("other"))
            .unwrap_err();
        assert_eq!(wrong, Rejection::VerifierMismatch);

        let code = grants.issue_code(grant(Some(challenge)));
        assert!(
            grants
                .redeem_code("app", &code, redirect, Some("verifier"))
                .is_ok()
        );
    }

    #[test]
    fn refresh_rotates_and_revoke_kills_the_family() {
        let mut grants = Grants::default();
        let code = grants.issue_code(grant(None));
        let first = grants
            .redeem_code("app", &code, "https://example.test/cb", None)
            .unwrap();

        let second = grants.refresh("app", &first.refresh_token).unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(second.open_id, first.open_id);
        assert_eq!(
            grants.refresh("app", &first.refresh_token).unwrap_err(),
            Rejection::UnknownRefreshToken
        );

        grants.revoke("other", &second.access_token);
        assert!(grants.access(&second.access_token).is_some());
        grants.revoke("app", &second.access_token);
        assert!(grants.access(&second.access_token).is_none());
        assert!(grants.access(&first.access_token).is_none());
        assert!(grants.refresh("app", &second.refresh_token).is_err());
    }

    #[test]
    fn bounded_map_forgets_the_oldest() {
        let mut map = BoundedMap::default();
        for n in 0..=MAX_LIVE {
            map.insert(n.to_string(), n);
        }
        assert_eq!(map.get("0"), None);
        assert_eq!(map.get("1"), Some(&1));
        assert_eq!(map.entries.len(), MAX_LIVE);
    }
}
