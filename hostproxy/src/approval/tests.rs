use std::time::Duration;

use super::*;
use crate::config::ApprovalSettings;

fn settings(ask: &[&str], remember: Remember, timeout_ms: u64) -> ApprovalSettings {
    ApprovalSettings {
        ask: ask.iter().map(|p| p.parse().unwrap()).collect(),
        timeout: Duration::from_millis(timeout_ms),
        remember,
        approver: None,
        desktop: false,
    }
}

fn container(name: &str, instance: &str) -> Identity {
    Identity {
        name: format!("container:{name}"),
        scopes: Some(Default::default()),
        container: Some(instance.into()),
        instance: Some(instance.into()),
        ask: Vec::new(),
    }
}

fn git_get(host: &str) -> Use {
    Use {
        scope: format!("git:{host}"),
        also: Some(format!("git-push:{host}")),
        what: "git credential get".into(),
        target: host.into(),
        hold: None,
    }
}

/// Answers the first ask that appears with `allow`, once.
async fn answer_next(a: &Approvals, allow: bool, always: bool) -> PendingAsk {
    let mut rx = a.subscribe();
    loop {
        if let Some(p) = a.pending().into_iter().next() {
            a.answer(
                &p.id,
                Answer {
                    allow,
                    always,
                    by: "test".into(),
                },
            )
            .unwrap();
            return p;
        }
        rx.changed().await.unwrap();
    }
}

#[tokio::test]
async fn nothing_asks_without_a_matching_pattern() {
    let a = Approvals::new(settings(&["ssh"], Remember::Once, 50), Audit::disabled());
    a.check(&container("web", "c1"), git_get("github.com"))
        .await
        .unwrap();
    assert!(a.pending().is_empty());
}

#[tokio::test]
async fn silence_is_a_denial_with_the_time_waited_and_the_ask_leaves_the_list() {
    let a = Approvals::new(settings(&["git:*"], Remember::Once, 100), Audit::disabled());
    let err = a
        .check(&container("web", "c1"), git_get("github.com"))
        .await
        .unwrap_err();
    assert_eq!(err, Refusal::NoAnswer(Duration::from_millis(100)));
    assert_eq!(err.to_string(), "no answer on the host within 0s");
    assert!(a.pending().is_empty());
}

#[tokio::test]
async fn remember_container_asks_once_per_identity_and_never_shares() {
    let a = Approvals::new(
        settings(&["git-push:*"], Remember::Container, 5_000),
        Audit::disabled(),
    );
    let (web, api) = (container("web", "c1"), container("api", "c2"));
    let waiting = tokio::spawn({
        let (a, web) = (a.clone(), web.clone());
        async move { a.check(&web, git_get("github.com")).await }
    });
    let asked = answer_next(&a, true, false).await;
    assert_eq!(asked.identity, "container:web");
    assert!(asked.why.contains("git-push:*"), "{}", asked.why);
    waiting.await.unwrap().unwrap();
    // The same container again: no ask.
    a.check(&web, git_get("github.com")).await.unwrap();
    assert!(a.pending().is_empty());
    // Another container is asked; a denial is a denial.
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.check(&api, git_get("github.com")).await }
    });
    assert_eq!(
        answer_next(&a, false, false).await.identity,
        "container:api"
    );
    assert_eq!(waiting.await.unwrap().unwrap_err(), Refusal::Denied);
    // The container ends: its allow is forgotten.
    a.forget(&web.owner_key());
    let again = tokio::spawn({
        let a = a.clone();
        async move { a.check(&web, git_get("github.com")).await }
    });
    answer_next(&a, false, false).await;
    assert_eq!(again.await.unwrap().unwrap_err(), Refusal::Denied);
}

#[tokio::test]
async fn once_asks_every_time_unless_the_answer_was_always() {
    let a = Approvals::new(settings(&["ssh"], Remember::Once, 5_000), Audit::disabled());
    let web = container("web", "c1");
    let ssh = || Use {
        scope: "ssh".into(),
        also: None,
        what: "sign".into(),
        target: "SHA256:k".into(),
        hold: None,
    };
    for always in [false, true] {
        let waiting = tokio::spawn({
            let (a, web) = (a.clone(), web.clone());
            async move { a.check(&web, ssh()).await }
        });
        answer_next(&a, true, always).await;
        waiting.await.unwrap().unwrap();
    }
    // "always": no more asks for this container.
    a.check(&web, ssh()).await.unwrap();
}

#[tokio::test]
async fn a_label_adds_asks_and_an_ending_container_denies_what_it_waits_for() {
    let a = Approvals::new(settings(&[], Remember::Container, 5_000), Audit::disabled());
    let mut web = container("web", "c1");
    web.ask = vec!["docker:*".parse().unwrap()];
    let waiting = tokio::spawn({
        let (a, web) = (a.clone(), web.clone());
        async move {
            a.check(
                &web,
                Use {
                    scope: "docker:ghcr.io".into(),
                    also: None,
                    what: "docker credential get".into(),
                    target: "ghcr.io".into(),
                    hold: None,
                },
            )
            .await
        }
    });
    let mut rx = a.subscribe();
    while a.pending().is_empty() {
        rx.changed().await.unwrap();
    }
    assert!(
        a.pending()[0]
            .why
            .contains(clawker_protocol::approval::ASK_LABEL)
    );
    a.forget(&web.owner_key());
    assert_eq!(waiting.await.unwrap().unwrap_err(), Refusal::Ended);
    assert!(a.pending().is_empty());
}

#[tokio::test]
async fn a_container_cannot_bury_the_user_in_asks_and_a_dropped_request_withdraws_its_ask() {
    let a = Approvals::new(settings(&["*"], Remember::Once, 5_000), Audit::disabled());
    let web = container("web", "c1");
    let mut waiting = Vec::new();
    for _ in 0..MAX_PENDING_PER_IDENTITY {
        let (a, web) = (a.clone(), web.clone());
        waiting.push(tokio::spawn(async move {
            a.check(&web, git_get("github.com")).await
        }));
    }
    let mut rx = a.subscribe();
    while a.pending().len() < MAX_PENDING_PER_IDENTITY {
        rx.changed().await.unwrap();
    }
    assert_eq!(
        a.check(&web, git_get("github.com")).await.unwrap_err(),
        Refusal::TooMany
    );
    for w in waiting {
        w.abort();
        let _ = w.await;
    }
    assert!(a.pending().is_empty(), "{:?}", a.pending());
    let unknown = a.answer(
        "00000000",
        Answer {
            allow: true,
            always: false,
            by: "test".into(),
        },
    );
    assert!(unknown.unwrap_err().contains("no ask"));
}

#[tokio::test]
async fn a_hold_lets_one_answer_cover_the_requests_of_one_use_even_when_remember_is_once() {
    let a = Approvals::new(
        settings(&["git-push:*"], Remember::Once, 5_000),
        Audit::disabled(),
    );
    let web = container("web", "c1");
    let push = || Use {
        scope: "git-push:example.com".into(),
        also: None,
        what: "git push".into(),
        target: "example.com/r.git".into(),
        hold: Some(Duration::from_millis(300)),
    };
    let waiting = tokio::spawn({
        let (a, web) = (a.clone(), web.clone());
        async move { a.check(&web, push()).await }
    });
    answer_next(&a, true, false).await;
    waiting.await.unwrap().unwrap();
    // The push's next request, within the hold: no ask.
    a.check(&web, push()).await.unwrap();
    // After it, `once` asks again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = tokio::spawn({
        let a = a.clone();
        async move { a.check(&web, push()).await }
    });
    answer_next(&a, false, false).await;
    assert_eq!(again.await.unwrap().unwrap_err(), Refusal::Denied);
}
