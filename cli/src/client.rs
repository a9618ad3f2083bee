//! The HTTP client: every request carries the key; every failure becomes an [`Error`] a person
//! can act on (the server's message and request id, or the URL that could not be reached).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Input(format!("--url must start with http:// or https://, got `{base}`")));
        }
        // no overall timeout: streams and batches last as long as they last
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("runq-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Input(format!("cannot set up HTTP: {e}")))?;
        Ok(Self { http, base, key: key.filter(|k| !k.trim().is_empty()) })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    /// Sends a request; any status but 2xx becomes [`Error::Api`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let request = request.build().map_err(|e| Error::Input(format!("bad request: {e}")))?;
        let url = request.url().to_string();
        let response = self.http.execute(request).await.map_err(|e| connect_error(&url, &e))?;
        if response.status().is_success() { Ok(response) } else { Err(api_error(response).await) }
    }

    /// Sends a request and decodes its JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|e| connect_error(&url, &e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol { url, reason: format!("not the JSON expected: {e}") })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await.map(drop)
    }
}

/// The root cause of a transport failure ("Connection refused"), with the URL it concerned.
pub fn connect_error(url: &str, error: &reqwest::Error) -> Error {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let reason = if error.is_timeout() { "timed out".to_owned() } else { cause.to_string() };
    Error::Connect { url: url.to_owned(), reason }
}

/// The error envelope of a refused request: `{message, error: {code, message}}`.
async fn api_error(response: Response) -> Error {
    let status = response.status();
    let request_id = response.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message =
        body["message"].as_str().or_else(|| body["error"]["message"].as_str()).map(str::to_owned).unwrap_or_else(
            || match text.trim() {
                "" => status.canonical_reason().unwrap_or("no message").to_owned(),
                text => text.chars().take(200).collect(),
            },
        );
    let code = body["error"]["code"].as_str().unwrap_or("http_error").to_owned();
    Error::Api { status: status.as_u16(), code, message, request_id }
}
