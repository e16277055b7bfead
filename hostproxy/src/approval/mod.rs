//! Asking the user (SPEC.md 14). A use whose scope matches `[approval] ask` (or the
//! container's `dev.clawker.hostproxy.ask` label, which only adds) waits in [`Approvals::check`]
//! while every asker is asked at once — `hostproxy approvals` clients on the control socket,
//! the desktop, the `--approver` hook — and the first answer wins; silence until the timeout
//! is a denial. An allow is remembered per identity (never shared), as `remember` says, and
//! forgotten when the identity ends. Nothing is done for the request before the allow:
//! callers check before they touch git, the agent, a helper or a socket.
//!
//! Every ask, answer and timeout goes to the audit log (route `approval`).

mod askers;

pub use askers::desktop;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clawker_protocol::approval::{AskPattern, PendingAsk};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::auth::Identity;
use crate::config::{ApprovalSettings, Remember};

/// Asks one identity may have waiting at once; more are refused at once (429), so a
/// container cannot bury the user in asks.
pub const MAX_PENDING_PER_IDENTITY: usize = 4;

/// The audit log's route for asks and answers.
pub const AUDIT_ROUTE: &str = "approval";

/// One use that may need an answer.
#[derive(Debug, Clone)]
pub struct Use {
    /// The scope it needs (`git:github.com`, `ssh`, `socket:op-agent`); an allow is
    /// remembered for this scope.
    pub scope: String,
    /// Another scope an ask pattern may name for the same use: a credential `get` may be
    /// for a push, so `git-push:HOST` asks for it too.
    pub also: Option<String>,
    /// What would happen (`git credential get`).
    pub what: String,
    /// On what (a host, a registry, a socket's name).
    pub target: String,
    /// An allow holds at least this long for this scope, whatever `remember` says: one use
    /// that is several requests (a git push is two or three) is asked once.
    pub hold: Option<Duration>,
}

/// Why a use was refused; the message is what the container reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("denied on the host")]
    Denied,
    #[error("no answer on the host within {}s", .0.as_secs())]
    NoAnswer(Duration),
    #[error(
        "too many asks of this container are waiting for the user: answer them (hostproxy approvals) and retry"
    )]
    TooMany,
    #[error("denied on the host: the container ended")]
    Ended,
}

/// An answer to one ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allow: bool,
    /// Also allow this scope until the container ends.
    pub always: bool,
    /// Who answered (`clawker_protocol::approval::answered_by`).
    pub by: String,
}

#[derive(Debug)]
struct Pending {
    ask: PendingAsk,
    owner: String,
    deadline: Instant,
    answer: Option<oneshot::Sender<Answer>>,
}

#[derive(Debug)]
struct Grant {
    scope: String,
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Book {
    /// By when they were asked (a sequence number), so the oldest is first.
    pending: BTreeMap<u64, Pending>,
    next: u64,
    grants: HashMap<String, Vec<Grant>>,
}

#[derive(Debug)]
struct Inner {
    settings: ApprovalSettings,
    audit: Audit,
    book: Mutex<Book>,
    /// Bumped whenever the pending asks change (`hostproxy approvals --follow`).
    changed: watch::Sender<u64>,
}

/// The asks and the grants of one daemon. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Approvals(Arc<Inner>);

impl Approvals {
    pub fn new(settings: ApprovalSettings, audit: Audit) -> Self {
        Self(Arc::new(Inner {
            settings,
            audit,
            book: Mutex::new(Book::default()),
            changed: watch::channel(0).0,
        }))
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.0.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.0.changed.send_modify(|v| *v += 1);
    }

    /// The pattern that makes `u` need an answer for `id`, and where it comes from.
    fn why(&self, id: &Identity, u: &Use) -> Option<String> {
        let hit =
            |p: &AskPattern| p.matches(&u.scope) || u.also.as_deref().is_some_and(|a| p.matches(a));
        if let Some(p) = self.0.settings.ask.iter().find(|p| hit(p)) {
            return Some(format!("{p} is in [approval] ask"));
        }
        id.ask.iter().find(|p| hit(p)).map(|p| {
            format!(
                "{p} is in the container's label {}",
                clawker_protocol::approval::ASK_LABEL
            )
        })
    }

    /// Whether `u` may go ahead for `id`: at once when nothing asks for it or an earlier
    /// answer still holds, else once the user allowed it. Nothing is done for the request
    /// before this returns `Ok`.
    pub async fn check(&self, id: &Identity, u: Use) -> Result<(), Refusal> {
        let Some(why) = self.why(id, &u) else {
            return Ok(());
        };
        let owner = id.owner_key();
        let timeout = self.0.settings.timeout;
        let (rx, ask_id, seq) = {
            let mut book = self.book();
            let now = Instant::now();
            if let Some(grants) = book.grants.get_mut(&owner) {
                grants.retain(|g| g.until.is_none_or(|t| t > now));
                if grants.iter().any(|g| g.scope == u.scope) {
                    return Ok(());
                }
            }
            if book.pending.values().filter(|p| p.owner == owner).count()
                >= MAX_PENDING_PER_IDENTITY
            {
                drop(book);
                self.audit(id, &u, "ask", false, "too many asks waiting".into());
                return Err(Refusal::TooMany);
            }
            let (tx, rx) = oneshot::channel();
            let seq = book.next;
            book.next += 1;
            let ask_id = new_id(seq);
            let ask = PendingAsk {
                id: ask_id.clone(),
                identity: id.name.clone(),
                container: id.container.clone(),
                scope: u.scope.clone(),
                what: u.what.clone(),
                target: u.target.clone(),
                why: why.clone(),
                since: crate::util::now_rfc3339(),
                expires_in: timeout.as_secs(),
            };
            book.pending.insert(
                seq,
                Pending {
                    ask,
                    owner: owner.clone(),
                    deadline: now + timeout,
                    answer: Some(tx),
                },
            );
            (rx, ask_id, seq)
        };
        // From here the ask is listed; it leaves the list however this ends (an answer, the
        // timeout, or the request dropped because its client went away).
        let guard = Withdraw {
            approvals: self,
            seq,
            askers: CancellationToken::new(),
        };
        self.bump();
        self.audit(id, &u, "ask", true, why.clone());
        tracing::info!(identity = %id.name, scope = %u.scope, id = %ask_id, "waiting for the user's answer");
        let snapshot = self.pending_one(seq);
        if let Some(ask) = snapshot {
            askers::start(self, &self.0.settings, ask, guard.askers.clone());
        }
        let outcome = tokio::time::timeout(timeout, rx).await;
        drop(guard);
        match outcome {
            Ok(Ok(a)) if a.allow => {
                let until = match (a.always, self.0.settings.remember) {
                    (true, _) | (false, Remember::Container) => Some(None),
                    (false, Remember::For(d)) => Some(Some(Instant::now() + d)),
                    (false, Remember::Once) => u.hold.map(|h| Some(Instant::now() + h)),
                };
                if let Some(until) = until {
                    self.book().grants.entry(owner).or_default().push(Grant {
                        scope: u.scope.clone(),
                        until,
                    });
                }
                self.audit(id, &u, "allow", true, format!("answered by {}", a.by));
                Ok(())
            }
            Ok(Ok(a)) if a.by == ENDED => {
                self.audit(id, &u, "deny", false, "the container ended".into());
                Err(Refusal::Ended)
            }
            Ok(Ok(a)) => {
                self.audit(id, &u, "deny", false, format!("answered by {}", a.by));
                Err(Refusal::Denied)
            }
            Ok(Err(_)) | Err(_) => {
                self.audit(id, &u, "timeout", false, "no answer".into());
                Err(Refusal::NoAnswer(timeout))
            }
        }
    }

    /// One audit line; folded like every record (no ask id in it, so a container that makes
    /// asks by the thousand leaves a line a second of each kind, with the count).
    fn audit(&self, id: &Identity, u: &Use, action: &str, allowed: bool, reason: String) {
        self.0.audit.write(&clawker_protocol::audit::AuditRecord {
            time: crate::util::now_rfc3339(),
            token: id.name.clone(),
            container: id.container.clone(),
            route: AUDIT_ROUTE.into(),
            action: action.into(),
            host: Some(u.target.clone()),
            key: Some(u.scope.clone()),
            allowed,
            reason: Some(reason),
            folded: None,
        });
    }

    fn pending_one(&self, seq: u64) -> Option<PendingAsk> {
        self.book().pending.get(&seq).map(|p| p.ask.clone())
    }

    /// The asks waiting now, oldest first, with the seconds each has left.
    pub fn pending(&self) -> Vec<PendingAsk> {
        let now = Instant::now();
        self.book()
            .pending
            .values()
            .map(|p| PendingAsk {
                expires_in: p.deadline.saturating_duration_since(now).as_secs(),
                ..p.ask.clone()
            })
            .collect()
    }

    /// A receiver that changes whenever the pending asks do.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// Answers the ask `id`. `Err`: no such ask is waiting (answered already, timed out).
    pub fn answer(&self, id: &str, answer: Answer) -> Result<(), String> {
        let tx = {
            let mut book = self.book();
            let Some(p) = book.pending.values_mut().find(|p| p.ask.id == id) else {
                return Err(format!(
                    "no ask {id:?} is waiting (answered already, or timed out): see hostproxy approvals --list"
                ));
            };
            p.answer.take()
        };
        match tx {
            // The waiting request removes the ask; a send that fails means it has just given
            // up (the timeout, or its client went away): the answer came too late, and says so.
            Some(tx) => tx.send(answer).map_err(|_| {
                format!("ask {id:?} ended before the answer (no answer in time, or its request went away)")
            }),
            None => Err(format!("ask {id:?} was answered already")),
        }
    }

    /// The identity `owner_key` ended (its container stopped, its token was revoked): what
    /// was allowed for it is forgotten, and what it still waits for is denied.
    pub fn forget(&self, owner_key: &str) {
        let senders: Vec<_> = {
            let mut book = self.book();
            book.grants.remove(owner_key);
            book.pending
                .values_mut()
                .filter(|p| p.owner == owner_key)
                .filter_map(|p| p.answer.take())
                .collect()
        };
        for tx in senders {
            let _ = tx.send(Answer {
                allow: false,
                always: false,
                by: ENDED.into(),
            });
        }
    }

    /// Whether any ask is configured at all (doctor, the banner).
    pub fn settings(&self) -> &ApprovalSettings {
        &self.0.settings
    }
}

/// `Answer::by` of the denial [`Approvals::forget`] sends.
const ENDED: &str = "the end of the container";

/// An ask's id: short enough to type (`hostproxy approve 3f9a1c07`), random so one cannot
/// be guessed from another, unique by its sequence number.
fn new_id(seq: u64) -> String {
    let r = crate::util::random_bytes::<3>().unwrap_or([0; 3]);
    format!("{:02x}{:02x}{:02x}{:02x}", seq as u8, r[0], r[1], r[2])
}

/// Takes an ask off the list and stops its askers, however the wait ended.
struct Withdraw<'a> {
    approvals: &'a Approvals,
    seq: u64,
    askers: CancellationToken,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.askers.cancel();
        let removed = self.approvals.book().pending.remove(&self.seq).is_some();
        if removed {
            self.approvals.bump();
        }
    }
}

#[cfg(test)]
mod tests;
