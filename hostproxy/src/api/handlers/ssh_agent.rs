//! `POST /ssh/agent`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::Secret;
use clawker_protocol::agent::{self, FAILURE_FRAME, Verdict, describe_request, filter_identities};
use clawker_protocol::api::{SshAgentRequest, SshAgentResponse, routes};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::state::AppState;
use crate::audit::Decision;
use crate::auth::Identity;
use crate::backends::AgentError;

/// Applies the agent filter to one framed request: either the agent's reply or, for a
/// refused message, `SSH_AGENT_FAILURE` produced here without contacting the agent.
///
/// `frame` has been checked to be exactly one frame by the caller.
async fn relay_agent_frame(
    state: &AppState,
    id: &Identity,
    frame: Vec<u8>,
) -> Result<Vec<u8>, AgentError> {
    let body = &frame[4..];
    let grant = id.agent_grant();
    let (verdict, refusal) = state.settings.agent_policy.decide_for(body, &grant);
    let (action, key) = describe_request(body);
    let refusal = refusal.map(str::to_string);
    let allowed_keys = grant.keys;
    state.audit.record(Decision {
        token: &id.name,
        route: routes::SSH_AGENT,
        action: &action,
        key,
        allowed: refusal.is_none(),
        reason: refusal,
        ..Default::default()
    });
    match verdict {
        Verdict::Refuse => {
            tracing::info!(
                message = body.first().copied(),
                "agent message refused by policy"
            );
            Ok(FAILURE_FRAME.to_vec())
        }
        Verdict::Forward => {
            let kind = body.first().copied();
            let reply = state.backends.agent.request(frame).await?;
            match (&allowed_keys, kind.as_ref()) {
                (Some(keys), Some(&agent::msg::REQUEST_IDENTITIES)) => {
                    Ok(filter_identities(&reply, keys))
                }
                _ => Ok(reply),
            }
        }
    }
}

/// The ask for one agent request: scope `ssh`, what the request does, with which key.
pub fn agent_use(body: &[u8]) -> crate::approval::Use {
    let (action, key) = describe_request(body);
    crate::approval::Use {
        scope: "ssh".into(),
        also: None,
        what: format!("use the ssh agent ({action})"),
        target: key.unwrap_or_else(|| "the host's ssh agent".into()),
        hold: None,
    }
}

pub async fn ssh_agent(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ApiJson(req): ApiJson<SshAgentRequest>,
) -> Result<Json<SshAgentResponse>, ApiError> {
    if !id.may_ssh() {
        return Err(ApiError::forbidden(
            "this token may not use the ssh agent (scope ssh)",
        ));
    }
    let frame = B64
        .decode(req.data.expose())
        .map_err(|_| ApiError::bad_request("data is not valid base64"))?;
    agent::single_frame(&frame).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // A request the filter would pass waits for the user's answer when `ssh` is asked for
    // (SPEC.md 14): the agent is not contacted before the allow.
    let (verdict, _) = state
        .settings
        .agent_policy
        .decide_for(&frame[4..], &id.agent_grant());
    if verdict == Verdict::Forward {
        state.approve(&id, agent_use(&frame[4..])).await?;
    }
    let reply = relay_agent_frame(&state, &id, frame)
        .await
        .map_err(|e| match e {
            AgentError::NoSocket | AgentError::Unreachable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no ssh agent on the host: start one and set SSH_AUTH_SOCK for the daemon",
            ),
            AgentError::BadReply => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the host ssh agent sent an invalid reply",
            ),
        })?;
    Ok(Json(SshAgentResponse {
        success: true,
        data: Secret::new(B64.encode(reply)),
    }))
}
