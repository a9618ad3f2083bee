//! Extractors whose rejections speak the error envelope: JSON bodies, query strings, paths and
//! the authenticated caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use runq_shared::db::keys::KeyAuth;
use runq_shared::domain::Scope;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::state::AppState;

/// A JSON body; failures name the offending field (`details.field`).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = json_body(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// An optional JSON body: an empty body is `None`; anything else must be JSON.
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|_| Error::PayloadTooLarge)?;
        match (bytes.is_empty(), json) {
            (true, _) => Ok(Self(None)),
            (false, false) => Err(Error::UnsupportedMediaType),
            (false, true) => parse_json(&bytes).map(|body| Self(Some(body))),
        }
    }
}

/// A JSON body together with the SHA-256 of its bytes (to recognise a retried request).
pub struct HashedJson<T>(pub T, pub [u8; 32]);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for HashedJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = json_body(req, state).await?;
        Ok(HashedJson(parse_json(&bytes)?, runq_shared::crypto::digest(&bytes)))
    }
}

async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    if !is_json(req.headers()) {
        return Err(Error::UnsupportedMediaType);
    }
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::invalid("body", r.body_text())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    reject_nul_in_json(bytes)?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let reason = e.inner().to_string();
        if e.inner().is_syntax() || e.inner().is_eof() {
            return Error::invalid("body", format!("malformed JSON: {reason}"));
        }
        invalid_at(&e.path().to_string(), reason)
    })
}

/// Postgres stores no NUL character, neither in text nor in `jsonb`: a body that carries one
/// (`\u0000`, the only way JSON can) is refused here, naming the field, instead of failing in
/// the database. The bytes are scanned first; only a body that has the escape is parsed to find
/// where it is.
fn reject_nul_in_json(bytes: &[u8]) -> Result<(), Error> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    // malformed JSON, or `\\u0000` (an escaped backslash): deserializing says what is wrong
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Ok(()) };
    match nul_path(&value, String::new()) {
        Some(path) if path.is_empty() => Err(Error::invalid("body", NUL_REASON)),
        Some(path) => Err(Error::invalid(path, NUL_REASON)),
        None => Ok(()),
    }
}

const NUL_REASON: &str = "must not contain the NUL character (\\u0000)";

/// The path (`messages[0].content`, as serde_path_to_error writes it) of the first string or
/// object key holding a NUL character.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let field = |path: &str, key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::String(s) if s.contains('\0') => Some(path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_path(v, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(field(&path, &k.replace('\0', "\\u0000")))
            } else {
                nul_path(v, field(&path, k))
            }
        }),
        _ => None,
    }
}

/// The decoded `key=value` pairs of a query string; a NUL character (`%00`) in either is refused,
/// naming the parameter, for the reason [`reject_nul_in_json`] gives.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Error> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| {
            if key.contains('\0') || value.contains('\0') {
                return Err(Error::invalid(key.replace('\0', "%00"), NUL_REASON));
            }
            Ok((key.into_owned(), value.into_owned()))
        })
        .collect()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(|mime| {
        let mime = mime.trim();
        mime.eq_ignore_ascii_case("application/json") || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// Turns a serde failure at `path` into a field-level validation error; serde reports a missing
/// field at its parent, so the field name is taken from the message.
fn invalid_at(path: &str, reason: String) -> Error {
    let missing = reason.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()).map(str::to_owned);
    match (path, missing) {
        (".", Some(name)) => Error::missing(name),
        (path, Some(name)) => Error::missing(format!("{path}.{name}")),
        (".", None) => Error::invalid("body", reason),
        (path, None) => Error::invalid(path, reason),
    }
}

/// For `#[serde(default, deserialize_with = "nullable")]` on an `Option<Option<T>>` field of a
/// PATCH body: an absent field is `None` (leave as is), `null` is `Some(None)` (clear).
pub fn nullable<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    de: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}

/// A query string; failures name the offending parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or_default();
        query_pairs(query)?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| invalid_at(&e.path().to_string(), e.inner().to_string()))
    }
}

/// Path parameters, with rejections in the envelope.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        // `%00` in a segment decodes to a NUL character, which Postgres cannot compare with
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await
            && let Some((name, _)) = params.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(Error::invalid(name, NUL_REASON));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r| Error::invalid("path", r.body_text()))
    }
}

/// The authenticated caller: any valid key of the workspace, within its rate limit (the
/// request is counted here, once, whichever of these extractors a handler uses).
#[derive(Debug, Clone)]
pub struct Caller(pub KeyAuth);

/// A caller holding the `manage` scope; other keys get 403.
#[derive(Debug, Clone)]
pub struct Manager(pub KeyAuth);

/// A caller holding the `admin` scope (the operator); other keys get 403.
#[derive(Debug, Clone)]
pub struct Admin(pub KeyAuth);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(auth) = parts.extensions.get::<KeyAuth>() {
            return Ok(Self(auth.clone()));
        }
        let presented = presented_key(&parts.headers).ok_or(Error::Unauthorized("API key is required"))?;
        let auth = state.auth.authenticate(&state.db, presented).await?;
        tracing::Span::current().record("workspace_id", tracing::field::display(auth.workspace_id));
        if let Some(slot) = parts.extensions.get::<crate::observe::WorkspaceSlot>() {
            slot.set(auth.workspace_id);
        }
        crate::ratelimit::admit(state, parts, &auth).await?;
        parts.extensions.insert(auth.clone());
        Ok(Self(auth))
    }
}

/// The caller, if its key holds `scope`; 403 otherwise.
async fn with_scope(parts: &mut Parts, state: &AppState, scope: Scope) -> Result<KeyAuth, Error> {
    let Caller(auth) = Caller::from_request_parts(parts, state).await?;
    if !auth.has(scope) {
        return Err(Error::Forbidden(format!("This API key lacks the '{}' scope", scope.as_str())));
    }
    Ok(auth)
}

impl FromRequestParts<AppState> for Manager {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        with_scope(parts, state, Scope::Manage).await.map(Self)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        with_scope(parts, state, Scope::Admin).await.map(Self)
    }
}

/// The key from `x-api-key`, `Authorization: Bearer K` or `Authorization: K`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let raw = match headers.get("x-api-key") {
        Some(v) => v.to_str().ok()?,
        None => {
            let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
            match v.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key,
                _ => v,
            }
        }
    };
    let raw = raw.trim();
    (!raw.is_empty()).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn keys_are_read_from_all_three_header_forms() {
        assert_eq!(presented_key(&headers("x-api-key", "rq_a")), Some("rq_a"));
        assert_eq!(presented_key(&headers("authorization", "Bearer rq_b")), Some("rq_b"));
        assert_eq!(presented_key(&headers("authorization", "rq_c")), Some("rq_c"));
        assert_eq!(presented_key(&headers("authorization", "  ")), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn a_nul_character_is_found_where_it_is_and_an_escaped_backslash_is_not_one() {
        let field = |body: &str| match reject_nul_in_json(body.as_bytes()) {
            Err(Error::Invalid { field, .. }) => Some(field),
            _ => None,
        };
        assert_eq!(field(r#"{"a": {"b": ["x", {"c": "\u0000"}]}}"#).as_deref(), Some("a.b[1].c"));
        assert_eq!(field(r#""\u0000""#).as_deref(), Some("body"));
        assert_eq!(field(r#"{"a": "\\u0000"}"#), None);
        assert_eq!(field(r#"{"a": "\u0000"#), None, "malformed JSON is left to the parser's error");
        assert!(matches!(query_pairs("a=1&b=x%00"), Err(Error::Invalid { field, .. }) if field == "b"));
        assert_eq!(query_pairs("a=1&b=%C3%A9").unwrap()[1], ("b".into(), "é".into()));
    }

    #[test]
    fn a_missing_field_is_named_in_the_error() {
        match invalid_at(".", "missing field `name`".into()) {
            Error::Missing { field } => assert_eq!(field, "name"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
