//! `POST /open/url`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use clawker_protocol::api::{OpenUrlRequest, OpenUrlResponse, routes};
use clawker_protocol::urls::{UrlError, canonical_url, check_url_policy};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;

/// The status a URL refusal gets: 403 for policy, 400 for malformed input.
fn url_error(e: UrlError) -> ApiError {
    match e {
        UrlError::InternalHost => ApiError::forbidden(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

pub async fn open_url(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<OpenUrlRequest>,
) -> Result<Json<OpenUrlResponse>, ApiError> {
    let result = open_url_decide(&state, &id, &req.url).await;
    let (host, refusal) = match &result {
        Ok((host, _)) => (Some(host.clone()), None),
        Err((host, e)) => (host.clone(), Some(e.message.clone())),
    };
    state.audit.record(Decision {
        token: &id.name,
        route: routes::OPEN_URL,
        action: "open",
        host: host.clone(),
        allowed: refusal.is_none(),
        reason: refusal,
        ..Default::default()
    });
    let (_, url) = result.map_err(|(_, e)| e)?;
    tracing::info!(host, "opened url");
    Ok(Json(OpenUrlResponse { success: true, url }))
}

/// Whether `name` resolves, on the host and now, to an address no name may land on
/// (`is_refused_for_a_name`): `169.254.169.254.nip.io`, a name for a private or loopback
/// address. A name that does not resolve (within 2 s) reaches nothing and is let through;
/// a name that changes its answer between this look-up and the browser's (DNS rebinding)
/// is out of reach here (SECURITY.md).
async fn resolves_inside(name: &str, port: u16) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return false;
    }
    let lookup = tokio::net::lookup_host((name.trim_end_matches('.'), port));
    match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs
            .map(|a| a.ip())
            .any(clawker_protocol::urls::is_refused_for_a_name),
        _ => false,
    }
}

/// Validates, applies the policy and launches; errors carry the URL's host for the audit log.
async fn open_url_decide(
    state: &AppState,
    id: &Identity,
    raw: &str,
) -> Result<(String, String), (Option<String>, ApiError)> {
    if !id.may_open() {
        return Err((
            None,
            ApiError::forbidden("this token may not open urls (scope open)"),
        ));
    }
    let url = canonical_url(raw).map_err(|e| (None, url_error(e)))?;
    let parsed = url::Url::parse(&url).map_err(|_| (None, ApiError::bad_request("invalid url")))?;
    let host = parsed.host_str().unwrap_or("").to_string();
    check_url_policy(&parsed, &state.settings.open_allowed_hosts)
        .map_err(|e| (Some(host.clone()), url_error(e)))?;
    if let Some(url::Host::Domain(name)) = parsed.host()
        && !state.settings.open_allowed_hosts.iter().any(|h| h == &host)
        && resolves_inside(name, parsed.port_or_known_default().unwrap_or(80)).await
    {
        return Err((Some(host), url_error(UrlError::InternalHost)));
    }
    let limited = if id.is_scoped() {
        state.token_limits.try_acquire(
            &id.name,
            routes::OPEN_URL,
            state.settings.open_rate_per_minute,
        )
    } else {
        state.open_limiter.try_acquire()
    };
    if let Err(wait) = limited {
        return Err((
            Some(host),
            ApiError::too_many("too many urls opened: try again later", wait),
        ));
    }
    state
        .approve(
            id,
            crate::approval::Use {
                scope: "open".into(),
                also: None,
                what: "open a page in the browser".into(),
                target: host.clone(),
                hold: None,
            },
        )
        .await
        .map_err(|e| (Some(host.clone()), e))?;
    if let Err(e) = state.backends.launcher.open(&url).await {
        tracing::warn!(error = %e, "url launcher failed");
        return Err((
            Some(host),
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the browser launcher failed on the host",
            ),
        ));
    }
    Ok((host, url))
}
