//! End-to-end: the real binaries with real git, ssh, Chromium and Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_trust;
mod approval;
mod arm64;
mod bridge;
mod browser;
mod capture;
mod ci_job;
mod cli;
mod conformance;
mod docker_creds;
mod doctor;
mod egress;
mod git_attrs;
mod install;
mod kept;
mod lifecycle;
mod mock_tools;
mod oauth_libs;
mod streams;
mod tools;
mod trust;
mod tunnel;
