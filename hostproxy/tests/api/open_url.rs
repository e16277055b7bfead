//! `POST /open/url`: the canonical URL to the launcher as one argument; every refusal
//! launches nothing.

use super::*;

#[tokio::test]
async fn open_url_launches_canonical_url_as_one_argument() {
    let d = spawn(|_, _| {}).await;
    let tricky = "https://Example.com/a;b$(touch pwned)?q=1&x=`id`#frag";
    let (s, b) = d.post("/open/url", json!({"url": tricky})).await;
    assert_eq!(s, 200, "{b}");
    let canonical = b["url"].as_str().unwrap().to_string();
    assert!(canonical.starts_with("https://example.com/"));
    assert_eq!(b["success"], true);
    assert_eq!(launch_log(d.path()), format!("BEGIN\n{canonical}\nEND\n"));
    assert!(!d.path().join("pwned").exists());
}

#[tokio::test]
async fn open_url_rejections_launch_nothing() {
    let d = spawn(|_, _| {}).await;
    for bad in [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://example.com/",
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://example.com/\nx",
        "https://exam\tple.com/",
        "https://example.com/\u{7f}",
        "not a url",
        "",
        "//example.com",
    ] {
        let (s, b) = d.post("/open/url", json!({"url": bad})).await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert_eq!(b["success"], false);
    }
    let (s, _) = d.post("/open/url", json!({"url": 42})).await;
    assert_eq!(s, 400);
    assert_eq!(launch_log(d.path()), "");
}

#[tokio::test]
async fn open_url_policy_refuses_internal_hosts_without_launching() {
    let d = spawn(|s, _| s.open_allowed_hosts = vec!["intranet".into()]).await;
    for bad in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://[fd00::1]/",
        "http://router/",
    ] {
        let (s, b) = d.post("/open/url", json!({"url": bad})).await;
        assert_eq!(s, 403, "{bad}: {b}");
    }
    assert_eq!(launch_log(d.path()), "");
    let (s, _) = d
        .post("/open/url", json!({"url": "http://intranet/"}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = d
        .post("/open/url", json!({"url": "http://localhost:5173/"}))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn open_url_launcher_failure_is_500_and_rate_limit_429() {
    let d = spawn(|s, dir| {
        let failing = dir.join("failing-launcher");
        write_script(&failing, "exit 3");
        s.browser = Some(vec![failing.display().to_string()]);
    })
    .await;
    let (s, b) = d
        .post("/open/url", json!({"url":"https://example.com/"}))
        .await;
    assert_eq!(s, 500);
    assert!(
        !b["error"].as_str().unwrap().contains("failing-launcher"),
        "internals leaked: {b}"
    );

    let d = spawn(|s, _| s.open_rate_per_minute = 2).await;
    for _ in 0..2 {
        assert_eq!(
            d.post("/open/url", json!({"url":"https://example.com/"}))
                .await
                .0,
            200
        );
    }
    let r = d
        .client
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .json(&json!({"url":"https://example.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(launch_log(d.path()).matches("BEGIN").count(), 2);
}
