//! The documented CI job (docs/ci.md, `examples/ci-job.sh`) run exactly as a user's CI would:
//! the example agent image against mock-proxy's scratch image on a user-defined network.
//! Broken wiring fails it with a line naming the missing part.

use std::process::Command;

use e2e::*;

fn build(args: &[&str], what: &str) {
    let out = Command::new("docker")
        .arg("build")
        .arg("-q")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn job(agent: &str, mock: &str, extra: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg(workspace_root().join("examples/ci-job.sh"))
        .args([agent, mock])
        .env("EXTRA_RUN_ARGS", extra)
        .env("WAIT", "15")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_documented_ci_job_passes_on_a_wired_image_and_names_what_is_missing() {
    let dist = dist_dir();
    // The mock's own image, exactly as docs/ci.md builds it.
    let mock = "hostproxy-mock:e2e";
    build(
        &[
            "-f",
            "examples/mock-proxy.Dockerfile",
            "-t",
            mock,
            &dist.display().to_string(),
        ],
        "the mock image",
    );
    let agent = "hostproxy-example-ci:e2e";
    build(
        &[
            "-f",
            "examples/Dockerfile",
            "--build-arg",
            &format!("BASE={}", test_image()),
            "-t",
            agent,
            ".",
        ],
        "the example image",
    );
    // git and ssh-add from the host (the test image is busybox only), leaving the image's
    // own /usr/local/bin in place.
    let host_tools = "-v /usr/bin:/usr/bin:ro -v /usr/lib:/usr/lib:ro -v /usr/lib64:/usr/lib64:ro -v /usr/share:/usr/share:ro";
    let (ok, out) = job(agent, mock, host_tools);
    assert!(ok, "the job failed on a wired image:\n{out}");
    assert!(out.contains("the image is wired right"), "{out}");

    let (ok, out) = job(
        agent,
        mock,
        &format!("{host_tools} -e GIT_CONFIG_NOSYSTEM=1"),
    );
    assert!(!ok, "no credential helper, yet the job passed:\n{out}");
    assert!(out.contains("credential.helper"), "{out}");

    let (ok, out) = job(agent, mock, &format!("{host_tools} -e BROWSER=true"));
    assert!(!ok, "no BROWSER, yet the job passed:\n{out}");
    assert!(out.contains("BROWSER=host-open"), "{out}");
}
