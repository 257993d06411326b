//! Shared extractors: strict JSON bodies whose every failure is a 400 in
//! the base error shape, and the client's address and user agent.
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::core::ClientMeta;

/// A JSON object body. Malformed JSON, anything but an object at the top
/// (serde would read an array into a struct field by field), wrong types,
/// unknown fields (with `deny_unknown_fields`), a missing or wrong content
/// type and oversized bodies are all answered with 400.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => object(v).map(JsonBody),
            Err(rejection) => Err(bad(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_string(),
                _ => rejection.body_text(),
            })),
        }
    }
}

/// A JSON object body sent with whatever content type a legacy client
/// gives it: `application/json`, `text/plain` (a browser's `fetch` with a
/// string body and no headers) or none. Everything else about it is as
/// strict as [`JsonBody`]: it must parse, be an object, and fit the type.
pub struct AnyTypeJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for AnyTypeJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ctype = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let accepted = match ctype.as_deref() {
            None | Some("") => true,
            Some(t) => t == "application/json" || t == "text/plain" || t.ends_with("+json"),
        };
        if !accepted {
            return Err(bad("the request body must be JSON".into()));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => bad("the request body is too large".into()),
                _ => bad("the request body could not be read".into()),
            })?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => object(v).map(AnyTypeJsonBody),
            Err(e) => Err(bad(format!("the request body is not JSON: {e}"))),
        }
    }
}

/// A malformed body: 400 in the base error shape.
fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// A parsed body as `T`: it must be a JSON object (serde would read an
/// array into a struct field by field) of `T`'s shape.
fn object<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(bad("the request body must be a JSON object".into()));
    }
    serde_json::from_value(v).map_err(|e| bad(format!("Failed to deserialize the JSON body: {e}")))
}

/// Who is calling: the client address (the TCP peer, or from
/// `X-Forwarded-For` when the peer is a trusted proxy) and user agent.
pub struct Client(pub ClientMeta);

impl<S> FromRequestParts<S> for Client
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        let ip = peer.map(|p| client_ip(p, parts, &app.http.trusted_proxies));
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        Ok(Client(ClientMeta {
            ip: ip.map(|i| i.to_string()),
            user_agent,
        }))
    }
}

/// Walk `X-Forwarded-For` from the right while the hop is trusted; the first
/// untrusted address is the client.
fn client_ip(peer: IpAddr, parts: &Parts, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in parts.headers.get_all("x-forwarded-for") {
        let Ok(s) = value.to_str() else { return client };
        for hop in s.split(',').rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
    }
    client
}

/// `s` percent-encoded as a query parameter's value.
pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Every non-empty value of a request cookie, in the order sent.
pub fn cookie_values(headers: &axum::http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
        .collect()
}

/// The value of a request cookie (`None` when absent or empty).
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, no `Domain`;
/// `Secure` when authgate is served over https. `max_age` 0 clears it;
/// `None` makes it last as long as the browser session.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<i64>,
    secure: bool,
) -> Option<axum::http::HeaderValue> {
    set_cookie_on(name, value, path, max_age, secure, None)
}

/// [`set_cookie`], shared with `domain` and its subdomains when given
/// (`session.cookie_domain`).
pub fn set_cookie_on(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<i64>,
    secure: bool,
    domain: Option<&str>,
) -> Option<axum::http::HeaderValue> {
    let secure = match domain {
        Some(d) => format!("; Domain={d}{}", if secure { "; Secure" } else { "" }),
        None if secure => "; Secure".to_string(),
        None => String::new(),
    };
    let max_age = max_age
        .map(|m| format!("; Max-Age={m}"))
        .unwrap_or_default();
    axum::http::HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}{max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(xff: &str) -> Parts {
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", xff)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let p = parts("198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &p, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer cannot claim another address.
        assert_eq!(
            client_ip("203.0.113.1".parse().unwrap(), &p, &trusted),
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        // A spoofed left-most entry behind a real client is ignored.
        let p = parts("1.2.3.4, 198.51.100.7");
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &p, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let p = parts("garbage");
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &p, &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}

/// What a provider sends the browser back to a callback with (every
/// surface's callback takes the same query).
#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    /// RFC 9207: the issuer of the authorization response.
    pub iss: Option<String>,
    /// The provider's error (e.g. `access_denied`).
    pub error: Option<String>,
    /// The provider's words on its error.
    pub error_description: Option<String>,
}

impl CallbackParams {
    /// The core's view of this callback: what the provider sent, and the
    /// flow cookie the browser carried. The surface adds who it is.
    pub fn callback<'a>(&'a self, flow_cookie: Option<&'a str>) -> crate::core::Callback<'a> {
        crate::core::Callback {
            state: self.state.as_deref(),
            flow_cookie,
            code: self.code.as_deref(),
            iss: self.iss.as_deref(),
            error: self.error.as_deref(),
            ..Default::default()
        }
    }
}

/// The checks of a surface's session-cookie keys (`<section>.cookie_name`,
/// `<section>.cookie_host_prefix`), the same for every surface with a
/// cookie.
pub fn check_cookie_keys(
    cfg: &crate::config::Config,
    section: &str,
    name: &str,
    host_prefix: Option<bool>,
    errors: &mut Vec<crate::config::ConfigError>,
) {
    use crate::config::err;
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token_char) {
        errors.push(err(
            &format!("{section}.cookie_name"),
            "must be a non-empty cookie name (letters, digits, ._-)",
        ));
    }
    if host_prefix == Some(true) && cfg.server.public_url().scheme() != "https" {
        errors.push(err(
            &format!("{section}.cookie_host_prefix"),
            "needs an https server.public_url (__Host- cookies are Secure)",
        ));
    }
}
