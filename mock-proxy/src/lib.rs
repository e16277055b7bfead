//! mock-proxy: the daemon's very router and gates with recording fakes behind them, plus a
//! control API under `/__mock/` (SPEC.md section 8).
//!
//! Because the routes, validation, gates and wire types are the daemon's own
//! (`hostproxy::router`), the mock cannot drift from the real API; only the side effects
//! differ: no browser is opened, git is not run, no agent is contacted, and no port is bound
//! for callbacks unless asked (`--real-listeners`).

pub mod cli;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::agent::FAILURE_FRAME;
use clawker_protocol::api::DockerCredentialAction;
use clawker_protocol::api::{
    ErrorResponse, GitCredentialAction, GitCredentialExtra, SuccessResponse,
};
use clawker_protocol::credential::CredentialFields;
use clawker_protocol::mock::{
    self, MockAgent, MockCallback, MockCredential, MockCredentials, MockFault, RecordedRequest,
};
use futures_util::future::BoxFuture;
use hostproxy::api::{AppState, Auth};
use hostproxy::backends::{
    AgentConnector, AgentError, Backends, BindError, CredentialHelper, DockerCredentials,
    DockerError, DockerReply, GitError, LaunchError, Launcher, LoopbackBinder, Notifier,
    NotifyError, PortBinder, Upstream,
};
use hostproxy::config::Settings;
use tokio_util::sync::CancellationToken;

/// What the mock has recorded and been told.
#[derive(Debug)]
pub struct Mock {
    requests: Mutex<Vec<RecordedRequest>>,
    credentials: Mutex<MockCredentials>,
    agent: Mutex<(MockAgent, usize)>,
    faults: Mutex<Vec<MockFault>>,
}

impl Default for Mock {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            credentials: Mutex::default(),
            agent: Mutex::new((MockAgent::Absent, 0)),
            faults: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct FakeLauncher;

impl Launcher for FakeLauncher {
    fn open<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        // The request itself is recorded; nothing is launched.
        Box::pin(async { Ok(()) })
    }
}

/// Egress (SPEC.md 13) without a network: the request was recorded on its way in (its
/// `Authorization` only as present, never its value); the fake upstream answers 200 with
/// what would have been sent, minus every header value.
struct FakeUpstream;

impl Upstream for FakeUpstream {
    fn send<'a>(
        &'a self,
        req: axum::http::Request<Body>,
        _ca_file: Option<&'a std::path::Path>,
    ) -> BoxFuture<'a, Result<axum::http::Response<Body>, String>> {
        Box::pin(async move {
            let headers: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
            let body = serde_json::json!({
                "mock": "upstream",
                "method": req.method().as_str(),
                "url": req.uri().to_string(),
                "headers": headers,
            });
            axum::http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .map_err(|e| e.to_string())
        })
    }
}

struct FakeNotifier;

impl Notifier for FakeNotifier {
    fn notify<'a>(
        &'a self,
        _title: &'a str,
        _body: &'a str,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        // The request itself is recorded; nothing is shown.
        Box::pin(async { Ok(()) })
    }
}

struct FakeGit(Arc<Mock>);

impl CredentialHelper for FakeGit {
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        Box::pin(async move {
            let host = input.host.clone().unwrap_or_default();
            let mut creds = lock(&self.0.credentials);
            match action {
                GitCredentialAction::Get => Ok(creds
                    .get(&host)
                    .filter(|c| {
                        // As git matches: a username asked for must be the one stored.
                        input
                            .username
                            .as_ref()
                            .is_none_or(|u| c.username.as_ref() == Some(u))
                    })
                    .and_then(|c| found(&input, c))),
                GitCredentialAction::Store => {
                    let extra = GitCredentialExtra::from_fields(&input);
                    creds.insert(
                        host,
                        MockCredential {
                            username: input.username,
                            password: input.password,
                            extra,
                        },
                    );
                    Ok(None)
                }
                GitCredentialAction::Erase => {
                    creds.remove(&host);
                    Ok(None)
                }
            }
        })
    }
}

/// What git's `credential fill` would answer with `stored`: `authtype`/`credential` only
/// to a caller that announced capability `authtype`, `state[]`/`continue` only with
/// `state`, and the capabilities answered are those announced.
fn found(input: &CredentialFields, stored: &MockCredential) -> Option<CredentialFields> {
    let has = |c: &str| input.capability.iter().any(|x| x == c);
    let mut f = CredentialFields {
        protocol: input.protocol.clone(),
        host: input.host.clone(),
        username: stored.username.clone(),
        password: stored.password.clone(),
        password_expiry_utc: stored.extra.password_expiry_utc.clone(),
        oauth_refresh_token: stored.extra.oauth_refresh_token.clone(),
        capability: input.capability.clone(),
        ..CredentialFields::default()
    };
    if has("authtype") {
        f.authtype = stored.extra.authtype.clone();
        f.credential = stored.extra.credential.clone();
        f.ephemeral = stored.extra.ephemeral;
    }
    if has("state") {
        f.state = stored.extra.state.clone();
        f.r#continue = stored.extra.r#continue;
    }
    (f.password.is_some() || f.credential.is_some()).then_some(f)
}

/// Docker registry credentials from the same table as git's, keyed by registry
/// (`127.0.0.1:5000`): `get` hands out its username and password, `list` names them;
/// `store` and `erase` (when the config allows them) change nothing.
struct FakeDocker(Arc<Mock>);

impl DockerCredentials for FakeDocker {
    fn run<'a>(
        &'a self,
        action: DockerCredentialAction,
        registry: Option<&'a str>,
        _username: Option<&'a clawker_protocol::Secret<String>>,
        _secret: Option<&'a clawker_protocol::Secret<String>>,
    ) -> BoxFuture<'a, Result<DockerReply, DockerError>> {
        let creds = lock(&self.0.credentials).clone();
        Box::pin(async move {
            Ok(match action {
                DockerCredentialAction::List => DockerReply::List(
                    creds
                        .iter()
                        .map(|(k, c)| (k.clone(), c.username.clone().unwrap_or_default()))
                        .collect(),
                ),
                DockerCredentialAction::Get => match registry.and_then(|r| creds.get(r)) {
                    Some(MockCredential {
                        username: Some(u),
                        password: Some(p),
                        ..
                    }) => DockerReply::Found {
                        username: u.clone(),
                        secret: p.clone(),
                    },
                    _ => DockerReply::NotFound,
                },
                DockerCredentialAction::Store | DockerCredentialAction::Erase => DockerReply::Done,
            })
        })
    }
}

struct FakeAgent(Arc<Mock>);

impl AgentConnector for FakeAgent {
    fn request(&self, _frame: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, AgentError>> {
        Box::pin(async move {
            let mut guard = lock(&self.0.agent);
            let (mode, next) = &mut *guard;
            match mode {
                MockAgent::Absent => Err(AgentError::NoSocket),
                MockAgent::Failure => Ok(FAILURE_FRAME.to_vec()),
                MockAgent::Replies(replies) if replies.is_empty() => Ok(FAILURE_FRAME.to_vec()),
                MockAgent::Replies(replies) => {
                    let r = &replies[(*next).min(replies.len() - 1)];
                    *next += 1;
                    B64.decode(r).map_err(|_| AgentError::BadReply)
                }
            }
        })
    }
}

/// Binds nothing (the default) or the real loopback listeners.
struct FakePorts {
    real: bool,
}

impl PortBinder for FakePorts {
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError> {
        if self.real {
            LoopbackBinder.bind(port)
        } else {
            Ok(Vec::new())
        }
    }
}

/// How to build a mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The port served (the `Host` gate checks it).
    pub port: u16,
    /// `Some`: enforced exactly like the daemon; `None`: any bearer token.
    pub token: Option<clawker_protocol::Secret<String>>,
    pub listen: Vec<IpAddr>,
    pub real_listeners: bool,
}

/// The mock's whole router: the daemon's API (recorded, with faults) plus `/__mock/`.
pub fn router(mock: Arc<Mock>, cfg: &MockConfig, shutdown: CancellationToken) -> Router {
    let settings = Settings {
        port: cfg.port,
        open_rate_per_minute: 0,
        ..Settings::default()
    };
    let backends = Backends {
        launcher: Arc::new(FakeLauncher),
        git: Arc::new(FakeGit(mock.clone())),
        agent: Arc::new(FakeAgent(mock.clone())),
        ports: Arc::new(FakePorts {
            real: cfg.real_listeners,
        }),
        notifier: Arc::new(FakeNotifier),
        docker: Arc::new(FakeDocker(mock.clone())),
        upstream: Arc::new(FakeUpstream),
    };
    let auth = match &cfg.token {
        Some(t) => Auth::Token(t.expose().clone().into()),
        None => Auth::AnyBearer,
    };
    let state = AppState::new(settings, auth, backends, &cfg.listen, shutdown);
    let api = hostproxy::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        mock.clone(),
        record_and_fault,
    ));
    let control = Router::new()
        .route(mock::REQUESTS, get(list_requests).delete(clear_requests))
        .route(mock::CREDENTIALS, put(set_credentials))
        .route(mock::CALLBACKS, post(inject_callback))
        .route(mock::AGENT, put(set_agent))
        .route(mock::FAULTS, post(add_fault).delete(clear_faults))
        // The control API hands out recorded bodies (test credentials among them): the same
        // Host gate as the API, so a page rebinding a name to the mock's port gets nothing.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            control_host_gate,
        ))
        .with_state((mock, state));
    control.merge(api)
}

const RECORDED_HEADERS: [&str; 4] = ["host", "content-type", "origin", "user-agent"];

async fn record_and_fault(State(mock): State<Arc<Mock>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let fault = {
        let mut faults = lock(&mock.faults);
        let hit = faults
            .iter()
            .position(|f| Some(f.route.as_str()) == route.as_deref() || f.route == path);
        hit.map(|i| {
            let f = faults[i].clone();
            if let Some(t) = faults[i].times.as_mut() {
                *t = t.saturating_sub(1);
                if *t == 0 {
                    faults.remove(i);
                }
            }
            f
        })
    };
    // The body is recorded as the daemon's own code reads it (a tee), never read here
    // first: a request the gates refuse is refused before its body is read, and a slow or
    // oversized body meets the daemon's own limits, exactly as on the real daemon.
    let (parts, body) = req.into_parts();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let tee = seen.clone();
    let body = Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
        if let Some(data) = frame.data_ref() {
            let mut buf = lock(&tee);
            if buf.len() < 1024 * 1024 {
                buf.extend_from_slice(data);
            }
        }
        frame
    }));
    let mut headers = std::collections::BTreeMap::new();
    for (k, v) in &parts.headers {
        let name = k.as_str();
        if RECORDED_HEADERS.contains(&name) || name.starts_with("sec-fetch-") {
            headers.insert(name.to_string(), v.to_str().unwrap_or("").to_string());
        }
    }
    if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        headers.insert("authorization".into(), "[present]".into());
    }
    let record = RecordedRequest {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: None,
        status: 0,
    };
    // Recorded on arrival (status 0 until answered), so a test can see a long-poll in flight.
    let index = {
        let mut requests = lock(&mock.requests);
        requests.push(record);
        requests.len() - 1
    };
    if let Some(delay) = fault.as_ref().and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let response = match fault.and_then(|f| f.status) {
        Some(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                Json(ErrorResponse::new(format!(
                    "injected fault: {}",
                    status.as_u16()
                ))),
            )
                .into_response()
        }
        None => next.run(Request::from_parts(parts, body)).await,
    };
    let bytes = std::mem::take(&mut *lock(&seen));
    if let Some(r) = lock(&mock.requests).get_mut(index) {
        r.status = response.status().as_u16();
        r.body = (!bytes.is_empty()).then(|| {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        });
    }
    response
}

async fn control_host_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match hostproxy::host_gate::check_host(req.headers(), &state.allowed_hosts, state.settings.port)
    {
        Ok(()) => next.run(req).await,
        Err(e) => (e.status(), Json(ErrorResponse::new(e.message()))).into_response(),
    }
}

type Control = State<(Arc<Mock>, AppState)>;

async fn list_requests(State((mock, _)): Control) -> Json<Vec<RecordedRequest>> {
    Json(lock(&mock.requests).clone())
}

async fn clear_requests(State((mock, _)): Control) -> Json<SuccessResponse> {
    lock(&mock.requests).clear();
    Json(SuccessResponse::OK)
}

async fn set_credentials(
    State((mock, _)): Control,
    Json(creds): Json<MockCredentials>,
) -> Json<SuccessResponse> {
    *lock(&mock.credentials) = creds;
    Json(SuccessResponse::OK)
}

async fn set_agent(
    State((mock, _)): Control,
    Json(agent): Json<MockAgent>,
) -> Json<SuccessResponse> {
    *lock(&mock.agent) = (agent, 0);
    Json(SuccessResponse::OK)
}

async fn add_fault(State((mock, _)): Control, Json(fault): Json<MockFault>) -> Response {
    if fault.status.is_none() && fault.delay_ms.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(ErrorResponse::new("a fault needs a status or a delay_ms")),
        )
            .into_response();
    }
    lock(&mock.faults).push(fault);
    Json(SuccessResponse::OK).into_response()
}

async fn clear_faults(State((mock, _)): Control) -> Json<SuccessResponse> {
    lock(&mock.faults).clear();
    Json(SuccessResponse::OK)
}

async fn inject_callback(
    State((_, state)): Control,
    Path(id): Path<String>,
    Json(cb): Json<MockCallback>,
) -> Response {
    let Some(session) = state.sessions.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(ErrorResponse::new("unknown or expired callback session")),
        )
            .into_response();
    };
    let data = clawker_protocol::api::CallbackData {
        method: cb.method,
        path: cb.path.unwrap_or_else(|| session.path.clone()),
        query: cb.query,
        headers: cb.headers,
        body: cb.body,
        received_at: hostproxy::util::now_rfc3339(),
    };
    session.inject(data);
    Json(SuccessResponse::OK).into_response()
}
