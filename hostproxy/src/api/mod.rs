//! The HTTP surface: `router(state)`, its gates and handlers. Knows callback/, auth/,
//! backends/ and audit; nothing here knows the command line or the process around it.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clawker_protocol::api::{self, routes};

mod error;
mod gates;
pub mod handlers;
mod json;
mod state;

pub use error::ApiError;
pub use gates::{RouteClass, check_token, classify, is_json_content_type};
pub use json::ApiJson;
pub use state::{AppState, Auth, Shared};

/// The daemon's routes, with every gate of SPEC.md 4.1 in front of them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(routes::HEALTH, get(handlers::health))
        .route(routes::STATUS, get(handlers::status))
        .route(routes::OPEN_URL, post(handlers::open_url))
        .route(routes::NOTIFY, post(handlers::notify))
        .route(routes::GIT_CREDENTIAL, post(handlers::git_credential))
        .route(routes::DOCKER_CREDENTIAL, post(handlers::docker_credential))
        .route(
            routes::EGRESS,
            axum::routing::any(crate::egress::api::egress),
        )
        .route(
            routes::GIT_EGRESS,
            get(crate::egress::git::git_egress).post(crate::egress::git::git_egress),
        )
        .route(
            routes::SSH_AGENT,
            post(handlers::ssh_agent).layer(DefaultBodyLimit::max(api::MAX_AGENT_BODY)),
        )
        .route(routes::CALLBACK_REGISTER, post(handlers::callback_register))
        .route(routes::CALLBACK_DATA, get(handlers::callback_data))
        .route(
            routes::CALLBACK,
            axum::routing::delete(handlers::callback_delete),
        )
        .route(
            "/cb/{id}/{*path}",
            get(handlers::cb_capture).post(handlers::cb_capture),
        )
        .route(
            "/cb/{id}/",
            get(handlers::cb_capture_root).post(handlers::cb_capture_root),
        )
        .fallback(|| async { ApiError::not_found("not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gates::api_gates,
        ))
        .with_state(state)
}
