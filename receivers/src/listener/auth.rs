//! Bearer-token authentication: tokens kept as SHA-256 digests, compared in constant time.

use super::config::AuthConfig;
use super::{file_stamp, Stamp};
use arc_swap::ArcSwap;
use ring::digest::{digest, SHA256};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

type Digest = [u8; 32];

fn hash(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

/// Why the tokens could not be loaded (the messages never hold a token).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens file could not be read.
    #[error("cannot read bearer_tokens_file {0}: {1}")]
    File(String, std::io::Error),
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable {0} (bearer_tokens_env) is not set")]
    Env(String),
    /// No token at all: every request would be refused.
    #[error("no bearer token in bearer_tokens_file or bearer_tokens_env")]
    Empty,
}

/// The accepted credentials of one receiver.
pub struct Auth {
    cfg: AuthConfig,
    env_tokens: Vec<Digest>,
    tokens: ArcSwap<Vec<Digest>>,
    seen: Mutex<Stamp>,
}

fn split(text: &str, commas: bool) -> impl Iterator<Item = &str> {
    text.split(move |c| c == '\n' || (commas && c == ','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('#'))
}

impl Auth {
    /// Reads the tokens now, so a missing file or variable fails the start or reload.
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthError> {
        let env_tokens = match &cfg.bearer_tokens_env {
            Some(var) => {
                let v = std::env::var(var).map_err(|_| AuthError::Env(var.clone()))?;
                split(&v, true).map(|t| hash(t.as_bytes())).collect()
            }
            None => Vec::new(),
        };
        let seen = cfg
            .bearer_tokens_file
            .as_deref()
            .map(file_stamp)
            .unwrap_or_default();
        let auth = Self {
            cfg: cfg.clone(),
            env_tokens,
            tokens: ArcSwap::from_pointee(Vec::new()),
            seen: Mutex::new(seen),
        };
        let tokens = auth.load()?;
        if tokens.is_empty() && !cfg.client_certificates {
            return Err(AuthError::Empty);
        }
        auth.tokens.store(Arc::new(tokens));
        Ok(auth)
    }

    fn load(&self) -> Result<Vec<Digest>, AuthError> {
        let mut all = self.env_tokens.clone();
        if let Some(f) = &self.cfg.bearer_tokens_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| AuthError::File(f.display().to_string(), e))?;
            all.extend(split(&text, false).map(|t| hash(t.as_bytes())));
        }
        Ok(all)
    }

    /// Whether a verified client certificate is enough.
    pub fn accepts_client_certificates(&self) -> bool {
        self.cfg.client_certificates
    }

    /// Whether there is a tokens file to watch.
    pub fn watches_file(&self) -> bool {
        self.cfg.bearer_tokens_file.is_some()
    }

    /// How often [`Auth::check_file`] runs.
    pub fn interval(&self) -> std::time::Duration {
        self.cfg.reload_interval.0
    }

    /// Whether the `Authorization: Bearer <token>` header names an accepted token. Every token
    /// is compared (in constant time), so the timing tells nothing about which or how close.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        let Some(v) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let v = v.as_bytes();
        let (scheme, token) = match v.iter().position(|b| *b == b' ') {
            Some(i) => v.split_at(i),
            None => return false,
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let given = hash(token.trim_ascii());
        let mut ok = subtle::Choice::from(0);
        for t in self.tokens.load().iter() {
            ok |= t.ct_eq(&given);
        }
        ok.into()
    }

    /// Re-reads the tokens file if it changed; a file that cannot be read keeps the old tokens.
    pub fn check_file(&self, receiver: &str) {
        let Some(f) = &self.cfg.bearer_tokens_file else {
            return;
        };
        let now = file_stamp(f);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match self.load() {
            Ok(t) => {
                let n = t.len();
                self.tokens.store(Arc::new(t));
                tracing::info!(
                    receiver,
                    tokens = n,
                    "bearer_tokens_file changed: tokens reloaded"
                );
            }
            Err(e) => {
                tracing::warn!(receiver, error = %e, "bearer_tokens_file changed but cannot be read; the previous tokens stay");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(file_text: &str) -> (Auth, tempfile_path::Guard) {
        let g = tempfile_path::Guard::new(file_text);
        let cfg = AuthConfig {
            bearer_tokens_file: Some(g.0.clone()),
            bearer_tokens_env: None,
            client_certificates: false,
            reload_interval: sluice_config::HumanDuration::from_secs(1),
        };
        (Auth::new(&cfg).unwrap(), g)
    }

    mod tempfile_path {
        pub struct Guard(pub std::path::PathBuf);
        impl Guard {
            pub fn new(text: &str) -> Self {
                let p = std::env::temp_dir().join(format!(
                    "sluice-tokens-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::write(&p, text).unwrap();
                Self(p)
            }
        }
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn with(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens_from_a_file() {
        let (a, _g) = auth("# comment\n  alpha  \n\nbeta\n");
        assert!(a.allows(&with("Bearer alpha")));
        assert!(a.allows(&with("bearer beta")));
        assert!(a.allows(&with("BEARER  beta ")));
        assert!(!a.allows(&with("Bearer alph")));
        assert!(!a.allows(&with("Bearer alphaa")));
        assert!(!a.allows(&with("Basic alpha")));
        assert!(!a.allows(&with("alpha")));
        assert!(!a.allows(&with("Bearer # comment")));
        assert!(!a.allows(&with("Bearer ")));
        assert!(!a.allows(&http::HeaderMap::new()));
    }

    #[test]
    fn no_token_at_all_fails_the_build() {
        let g = tempfile_path::Guard::new("\n# nothing\n");
        let cfg = AuthConfig {
            bearer_tokens_file: Some(g.0.clone()),
            bearer_tokens_env: None,
            client_certificates: false,
            reload_interval: sluice_config::HumanDuration::from_secs(1),
        };
        assert!(matches!(Auth::new(&cfg), Err(AuthError::Empty)));
    }
}
