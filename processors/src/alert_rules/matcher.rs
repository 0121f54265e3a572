//! Prometheus-style label matchers over OTLP attributes: `key='v'`, `key!='v'`, `key=~'re'`,
//! `key!~'re'`.

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use regex::Regex;
use std::borrow::Cow;

/// How a matcher compares.
#[derive(Debug, Clone)]
enum Test {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

/// One parsed matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The attribute key.
    pub key: String,
    test: Test,
}

/// Why a matcher did not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// Not `key<op>'value'`.
    #[error("expected key=~'regex', key!~'regex', key='value' or key!='value', got {0:?}")]
    Syntax(String),
    /// The value is not quoted.
    #[error("the value of {0:?} must be in single or double quotes")]
    Unquoted(String),
    /// The regex does not compile.
    #[error("invalid regex: {0}")]
    Regex(String),
}

impl Matcher {
    /// Parses `service=~'payment.*'`.
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let (pos, op) = ["=~", "!~", "!=", "="]
            .iter()
            .filter_map(|op| text.find(op).map(|p| (p, *op)))
            // The leftmost operator; at equal positions the longer one (listed first) wins.
            .min_by_key(|(p, _)| *p)
            .ok_or_else(|| MatcherError::Syntax(text.to_owned()))?;
        let key = text.get(..pos).unwrap_or_default().trim();
        let raw = text.get(pos + op.len()..).unwrap_or_default().trim();
        if key.is_empty()
            || key
                .chars()
                .any(|c| c.is_whitespace() || c == '\'' || c == '"')
        {
            return Err(MatcherError::Syntax(text.to_owned()));
        }
        let value = unquote(raw).ok_or_else(|| MatcherError::Unquoted(text.to_owned()))?;
        let regex = |v: &str| {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                MatcherError::Regex(e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
            })
        };
        let test = match op {
            "=~" => Test::Re(regex(value)?),
            "!~" => Test::NotRe(regex(value)?),
            "!=" => Test::Ne(value.to_owned()),
            _ => Test::Eq(value.to_owned()),
        };
        Ok(Self {
            key: key.to_owned(),
            test,
        })
    }

    /// Whether the attribute's value (`""` when absent, as in Prometheus) passes.
    pub fn matches(&self, value: &str) -> bool {
        match &self.test {
            Test::Eq(v) => value == v,
            Test::Ne(v) => value != v,
            Test::Re(r) => r.is_match(value),
            Test::NotRe(r) => !r.is_match(value),
        }
    }
}

fn unquote(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    (!inner.contains(q)).then_some(inner)
}

/// An attribute value as text (strings, numbers, booleans); `None` for arrays, maps, bytes.
pub fn text(kv: &KeyValue) -> Option<Cow<'_, str>> {
    Some(match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Owned(b.to_string()),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        _ => return None,
    })
}

/// The value of `key` among the point's attributes, then its resource's; `service` stands for
/// `service.name` where no attribute is called `service` (the guide's rules say `service`).
pub fn lookup<'a>(key: &str, point: &'a [KeyValue], resource: &'a [KeyValue]) -> Cow<'a, str> {
    let find = |k: &str| point.iter().chain(resource).find(|kv| kv.key == k);
    let found = match find(key) {
        None if key == "service" => find("service.name"),
        f => f,
    };
    found.and_then(text).unwrap_or(Cow::Borrowed(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_operators() {
        let m = Matcher::parse("service=~'payment.*'").unwrap();
        assert_eq!(m.key, "service");
        assert!(m.matches("payment-api"));
        assert!(!m.matches("my-payment"));
        assert!(Matcher::parse("env='prod'").unwrap().matches("prod"));
        assert!(Matcher::parse("env != \"prod\"").unwrap().matches("dev"));
        assert!(!Matcher::parse("env!~'pr.*'").unwrap().matches("prod"));
        assert!(Matcher::parse("env=''").unwrap().matches(""));
    }

    #[test]
    fn reports_bad_syntax_and_regex() {
        assert!(matches!(Matcher::parse("service"), Err(MatcherError::Syntax(_))));
        assert!(matches!(Matcher::parse("=~'x'"), Err(MatcherError::Syntax(_))));
        assert!(matches!(Matcher::parse("env=prod"), Err(MatcherError::Unquoted(_))));
        assert!(matches!(Matcher::parse("env=~'(unclosed'"), Err(MatcherError::Regex(_))));
    }
}
