//! `POST /notify`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use clawker_protocol::api::{
    MAX_NOTIFY_BODY, MAX_NOTIFY_TITLE, NOTIFY_PER_MINUTE, NotifyRequest, SuccessResponse, routes,
};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;

fn check(text: &str, what: &str, max: usize) -> Result<(), ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "the {what} is longer than {max} characters"
        )));
    }
    // Control characters would reach the host's notification daemon (and its logs) raw.
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "the {what} contains control characters"
        )));
    }
    Ok(())
}

pub async fn notify(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<NotifyRequest>,
) -> Result<Json<SuccessResponse>, ApiError> {
    let decided = decide(&state, &id, &req).await;
    state.audit.record(Decision {
        token: &id.name,
        route: routes::NOTIFY,
        action: "notify",
        allowed: decided.is_ok(),
        reason: decided.as_ref().err().map(|e| e.message.clone()),
        ..Default::default()
    });
    decided.map(|()| Json(SuccessResponse::OK))
}

/// Validates, applies scope and rate, then notifies: a refusal has shown nothing.
async fn decide(state: &AppState, id: &Identity, req: &NotifyRequest) -> Result<(), ApiError> {
    if !id.may_notify() {
        return Err(ApiError::forbidden(
            "this token may not raise notifications (scope notify)",
        ));
    }
    if req.title.trim().is_empty() {
        return Err(ApiError::bad_request("the title is empty"));
    }
    check(&req.title, "title", MAX_NOTIFY_TITLE)?;
    let body = req.body.as_deref().unwrap_or("");
    check(body, "body", MAX_NOTIFY_BODY)?;
    // Per identity, the user's token included: no container floods the host's desktop.
    if let Err(wait) = state
        .token_limits
        .try_acquire(&id.name, routes::NOTIFY, NOTIFY_PER_MINUTE)
    {
        return Err(ApiError::too_many(
            "too many notifications: at most 6 a minute",
            wait,
        ));
    }
    state
        .approve(
            id,
            crate::approval::Use {
                scope: "notify".into(),
                also: None,
                what: "show a notification".into(),
                target: "the desktop".into(),
                hold: None,
            },
        )
        .await?;
    state
        .backends
        .notifier
        .notify(&req.title, body)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "notifier failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the notifier failed on the host",
            )
        })
}
