//! `GET /health` and `GET /status`.

use axum::Json;
use axum::extract::State;
use clawker_protocol::api::{HealthResponse, StatusResponse};

use crate::api::state::AppState;

pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
    })
}

pub async fn status(State(state): State<AppState>) -> Json<StatusResponse> {
    Json(StatusResponse {
        success: true,
        service: clawker_protocol::SERVICE_NAME.into(),
        version: state.version.into(),
        pid: std::process::id(),
        port: state.settings.port,
        listen: state.listen.iter().map(ToString::to_string).collect(),
        uptime_secs: state.started.elapsed().as_secs(),
        sessions: state.sessions.len(),
    })
}
