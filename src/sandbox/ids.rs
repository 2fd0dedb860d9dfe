//! Identifiers shaped like TikTok's: authorization codes, tokens, user ids and log ids.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// An authorization code like TikTok's: `<base62>*<digit>!<digits>.va`.
///
/// The `*`, `!` and `.` are the point: TikTok's codes carry them, and a proxy that encodes a value
/// twice, or not at all, mangles exactly these characters, which the tests then catch.
pub(super) fn authorization_code() -> String {
    let mut rng = rand::rng();
    let shard = rng.random_range(0..10);
    let region = rng.random_range(1000..10_000);
    format!("{}*{shard}!{region}.va", random_base62(40))
}

/// An access token: TikTok's start with `act.`.
pub(super) fn access_token() -> String {
    token("act")
}

/// A refresh token: TikTok's start with `rft.`.
pub(super) fn refresh_token() -> String {
    token("rft")
}

// Tokens carry `!` and `.` too, so forwarding a refresh token byte-exact is tested as well.
fn token(prefix: &str) -> String {
    let region = rand::rng().random_range(1000..10_000);
    format!("{prefix}.{}!{region}.va", random_base62(56))
}

/// The user's id within one app. Derived rather than random, so the same user signing in to the
/// same app twice gets the same id, and another app gets another one, as TikTok's `open_id` does.
pub(super) fn open_id(client_key: &str, user: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"open_id\0")
        .chain_update(client_key)
        .chain_update(b"\0")
        .chain_update(user)
        .finalize();
    let tail: String = digest
        .iter()
        .map(|byte| char::from(BASE62[usize::from(*byte) % 62]))
        .collect();
    format!("-000{tail}")
}

/// The user's id across one developer's apps, in the UUID form TikTok uses.
pub(super) fn union_id(user: &str) -> String {
    let digest = hex::encode(
        Sha256::new()
            .chain_update(b"union_id\0")
            .chain_update(user)
            .finalize(),
    );
    format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
}

/// A log id like TikTok's: the UTC time as `YYYYMMDDhhmmss`, then 20 upper-case hex digits.
pub(super) fn log_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    log_id_at(secs, rand::rng().random::<u128>())
}

fn log_id_at(unix_secs: u64, random: u128) -> String {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let of_day = unix_secs % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let random = random & ((1 << 80) - 1);
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}{random:020X}")
}

/// Year, month and day of a day count since 1970-01-01 (Howard Hinnant's algorithm, restricted
/// to dates after the epoch so everything stays unsigned). A whole date library for one log id
/// format would be out of proportion.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Whether `challenge` has the shape TikTok documents: SHA-256 in lowercase hex.
pub(super) fn is_code_challenge(challenge: &str) -> bool {
    challenge.len() == 64
        && challenge
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The challenge TikTok expects for `verifier`: lowercase hex of its SHA-256.
pub(super) fn code_challenge_of(verifier: &str) -> String {
    hex::encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_the_characters_that_break_sloppy_encoding() {
        let code = authorization_code();
        assert!(
            code.contains('*') && code.contains('!') && code.ends_with(".va"),
            "{code}"
        );
        assert_ne!(code, authorization_code());
    }

    #[test]
    fn tokens_have_tiktok_prefixes() {
        assert!(access_token().starts_with("act."));
        assert!(refresh_token().starts_with("rft."));
    }

    #[test]
    fn open_id_is_stable_per_app_and_user() {
        assert_eq!(open_id("app", "user"), open_id("app", "user"));
        assert_ne!(open_id("app", "user"), open_id("other", "user"));
        assert_ne!(open_id("app", "user"), open_id("app", "other"));
        assert_eq!(union_id("user").len(), 36);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn log_id_starts_with_utc_time() {
        // 2024-02-29T12:34:56Z
        let id = log_id_at(1_709_210_096, u128::MAX);
        assert_eq!(id, "20240229123456FFFFFFFFFFFFFFFFFFFF");
    }

    #[test]
    fn challenge_shape_and_value() {
        // RFC 7636's example verifier; TikTok wants the digest in hex, not base64url.
        let challenge = code_challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            challenge,
            "13d31e961a1ad8ec2f16b10c4c982e0876a878ad6df144566ee1894acb70f9c3"
        );
        assert!(is_code_challenge(&challenge));
        assert!(!is_code_challenge(&challenge.to_uppercase()));
        assert!(!is_code_challenge(&challenge[1..]));
    }
}
