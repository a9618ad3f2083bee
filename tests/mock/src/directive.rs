//! `[[mock key=value ...]]` directives embedded in message text.
//!
//! runq's worker sends ordinary provider requests, so the only channel a
//! test has into the mock is the conversation itself. Directives are parsed
//! from system/user text, merged in conversation order (later wins) and
//! stripped before any text is echoed back.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

const OPEN: &str = "[[mock";
const CLOSE: &str = "]]";

/// A misbehaviour the mock should exhibit instead of (or while) answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reply with this HTTP status and the protocol's error body.
    Status(u16),
    /// Never send response headers.
    Hang,
    /// Send headers and the first token, then stall forever.
    HangStream,
    /// Send `drop_after` tokens, then cut the connection.
    Drop,
}

/// Per-request overrides; `None` means "use the server default".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Directive {
    pub ttft: Option<Duration>,
    pub delay: Option<Duration>,
    pub tokens: Option<usize>,
    pub tool: Option<String>,
    pub args: Option<String>,
    pub fault: Option<Fault>,
    pub times: Option<u32>,
    pub retry_after: Option<u64>,
    pub drop_after: Option<usize>,
}

/// A directive that could not be understood. Reported as a 400 so that a
/// typo in a test fails loudly instead of silently running the happy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError(pub String);

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mock directive: {}", self.0)
    }
}

impl std::error::Error for DirectiveError {}

/// Yields `(start, end, body)` for every directive in `text`, where
/// `start..end` spans the whole `[[mock ...]]` and `body` is what is inside.
fn find_all(text: &str) -> impl Iterator<Item = Result<(usize, usize, &str), DirectiveError>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let start = pos + text.get(pos..)?.find(OPEN)?;
            let after_open = start + OPEN.len();
            let rest = &text[after_open..];
            // `[[mockery]]` is prose, not a directive.
            if !(rest.starts_with(CLOSE) || rest.starts_with(char::is_whitespace)) {
                pos = after_open;
                continue;
            }
            let Some(close) = rest.find(CLOSE) else {
                pos = text.len();
                return Some(Err(DirectiveError(format!("unterminated `{OPEN}` (missing `{CLOSE}`)"))));
            };
            let end = after_open + close + CLOSE.len();
            pos = end;
            return Some(Ok((start, end, &rest[..close])));
        }
    })
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, DirectiveError> {
    value.parse().map_err(|_| DirectiveError(format!("`{key}` expects a number, got `{value}`")))
}

fn parse_fault(value: &str) -> Result<Fault, DirectiveError> {
    match value {
        "hang" => Ok(Fault::Hang),
        "hang_stream" => Ok(Fault::HangStream),
        "drop" => Ok(Fault::Drop),
        _ => match value.parse::<u16>() {
            Ok(code @ 400..=599) => Ok(Fault::Status(code)),
            _ => Err(DirectiveError(format!(
                "unknown fault `{value}` (expected an HTTP status 400-599, hang, hang_stream or drop)"
            ))),
        },
    }
}

impl Directive {
    fn apply(&mut self, body: &str) -> Result<(), DirectiveError> {
        for pair in body.split_whitespace() {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| DirectiveError(format!("expected key=value, got `{pair}`")))?;
            match key {
                "ttft" => self.ttft = Some(Duration::from_millis(parse_num(key, value)?)),
                "delay" => self.delay = Some(Duration::from_millis(parse_num(key, value)?)),
                "tokens" => self.tokens = Some(parse_num(key, value)?),
                "tool" => self.tool = Some(value.to_owned()),
                "args" => self.args = Some(value.to_owned()),
                "fault" => self.fault = Some(parse_fault(value)?),
                "times" => self.times = Some(parse_num(key, value)?),
                "retry_after" => self.retry_after = Some(parse_num(key, value)?),
                "drop_after" => self.drop_after = Some(parse_num(key, value)?),
                _ => return Err(DirectiveError(format!("unknown key `{key}`"))),
            }
        }
        Ok(())
    }

    /// Merges every directive found in `text` into `self`.
    pub fn scan(&mut self, text: &str) -> Result<(), DirectiveError> {
        // Almost every message has no directive; skip the iterator machinery.
        if !text.contains(OPEN) {
            return Ok(());
        }
        for found in find_all(text) {
            let (_, _, body) = found?;
            self.apply(body)?;
        }
        Ok(())
    }

    /// Parses a single text, mainly for tests and tooling.
    pub fn parse(text: &str) -> Result<Directive, DirectiveError> {
        let mut directive = Directive::default();
        directive.scan(text)?;
        Ok(directive)
    }
}

/// `text` with every directive removed (malformed ones are left in place).
pub fn strip(text: &str) -> Cow<'_, str> {
    if !text.contains(OPEN) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, _) in find_all(text).flatten() {
        out.push_str(&text[last..start]);
        last = end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_merges() {
        let d = Directive::parse(
            "hi [[mock ttft=5 tokens=3]] there [[mock tool=get args={\"a\":1} fault=429 times=2 retry_after=7]]",
        )
        .expect("valid");
        assert_eq!(d.ttft, Some(Duration::from_millis(5)));
        assert_eq!(d.tokens, Some(3));
        assert_eq!(d.tool.as_deref(), Some("get"));
        assert_eq!(d.args.as_deref(), Some("{\"a\":1}"));
        assert_eq!(d.fault, Some(Fault::Status(429)));
        assert_eq!(d.times, Some(2));
        assert_eq!(d.retry_after, Some(7));
    }

    #[test]
    fn later_directive_wins() {
        let mut d = Directive::parse("[[mock tokens=3]]").expect("valid");
        d.scan("[[mock tokens=9 fault=drop drop_after=4]]").expect("valid");
        assert_eq!(d.tokens, Some(9));
        assert_eq!(d.fault, Some(Fault::Drop));
        assert_eq!(d.drop_after, Some(4));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Directive::parse("[[mock tokens=x]]").is_err());
        assert!(Directive::parse("[[mock bogus=1]]").is_err());
        assert!(Directive::parse("[[mock fault=boom]]").is_err());
        assert!(Directive::parse("[[mock tokens=1").is_err());
        assert!(Directive::parse("[[mock noequals]]").is_err());
    }

    #[test]
    fn ignores_lookalikes() {
        assert_eq!(Directive::parse("[[mockery]]"), Ok(Directive::default()));
        assert_eq!(strip("[[mockery]]"), "[[mockery]]");
    }

    #[test]
    fn strips_directives() {
        assert_eq!(strip("a [[mock x=1]] b[[mock]]"), "a  b");
        assert!(matches!(strip("plain"), Cow::Borrowed("plain")));
    }
}
