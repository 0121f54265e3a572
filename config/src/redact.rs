//! The one place that decides what is secret: every log line, `/status` field, validation error
//! and export error that shows an endpoint or a client property goes through here, so a password
//! in `http://user:pass@host`, a `?password=` query or a Kafka `sasl.password` never leaves the
//! process in text.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// Query parameters whose values are secret (compared case-insensitively, as substrings).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "jaas",
    "credential",
    "auth",
];

/// Whether a property or parameter name holds a secret: `sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, `sasl.jaas.config`, `api_key`, `token`…
/// (paths such as `ssl.key.location` are not secrets but are hidden too: harmless).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// `value`, or [`REDACTED`] when `name` holds a secret.
pub fn property<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_name(name) {
        REDACTED
    } else {
        value
    }
}

/// The URL with the password of its user info and the values of secret query parameters
/// replaced by `***`; text that is not a URL is returned with anything between `://` and `@`
/// hidden. Borrowed when there is nothing to hide.
pub fn url(text: &str) -> Cow<'_, str> {
    let has_userinfo = authority(text).is_some_and(|a| a.contains('@'));
    let has_secret_query = text.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| is_secret_name(kv.split('=').next().unwrap_or("")))
    });
    if !has_userinfo && !has_secret_query {
        return Cow::Borrowed(text);
    }
    match url::Url::parse(text) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot have credentials, which these have.
                let _ = u.set_password(Some(REDACTED));
            }
            if has_secret_query {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_name(&k) {
                            REDACTED.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            Cow::Owned(u.to_string())
        }
        // Not a URL: hide the whole authority prefix rather than guess.
        Err(_) => Cow::Owned(match (text.find("://"), text.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!(
                "{}{REDACTED}{}",
                text.get(..s + 3).unwrap_or_default(),
                text.get(at..).unwrap_or_default()
            ),
            _ => REDACTED.to_owned(),
        }),
    }
}

/// The `user:pass@host:port` part of a URL, when it has one.
fn authority(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("://")?;
    rest.split(['/', '?', '#']).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_keeps_the_rest() {
        assert_eq!(url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert!(matches!(url("http://h:1/x"), Cow::Borrowed(_)));
        let r = url("http://user:s3cret@127.0.0.1:8123/");
        assert!(
            !r.contains("s3cret") && r.contains("user") && r.contains("127.0.0.1:8123"),
            "{r}"
        );
        let r = url("https://h:8443/?user=u&password=s3cret&x=1");
        assert!(
            !r.contains("s3cret") && r.contains("user=u") && r.contains("x=1"),
            "{r}"
        );
        let r = url("not a url://user:s3cret@host");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(!url("http://user:s3cret@").contains("s3cret"));
        assert_eq!(property("sasl.password", "s3cret"), REDACTED);
        assert_eq!(property("SASL.JAAS.CONFIG", "x"), REDACTED);
        assert_eq!(property("ssl.key.pem", "x"), REDACTED);
        assert_eq!(property("linger.ms", "20"), "20");
    }
}
