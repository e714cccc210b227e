//! Switchover and failover over the strategies of several servers (one per server).

use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use super::compare::{covers, missing};
use super::types::{FenceOptions, LastTxn, ReplicaContextOptions, RepointOptions};
use crate::error::{Error, Result};
use crate::position::ReplicationPosition;
use crate::strategy::{DetachOptions, EnableMasterOptions, ReplicationStrategy, Role};

/// One server taking part in a switchover or failover: an id (names the replication account
/// and slot made for it on the new master), its strategy, and optionally the host it
/// replicates from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Member<'a> {
    /// The server's id (a replica id: letters, digits, `-`, `_`).
    pub id: &'a str,
    /// Its strategy.
    pub strategy: &'a dyn ReplicationStrategy,
    /// The host its replication connections come from, when known: the account the new master
    /// makes for it is limited to that host ([`ReplicaContextOptions::replica_host`]).
    pub host: Option<&'a str>,
}

impl<'a> Member<'a> {
    /// A member whose host is not known.
    pub fn new(id: &'a str, strategy: &'a dyn ReplicationStrategy) -> Self {
        Member {
            id,
            strategy,
            host: None,
        }
    }

    /// Sets [`Member::host`].
    pub fn with_host(mut self, host: &'a str) -> Self {
        self.host = Some(host);
        self
    }
}

/// Options for [`switchover`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SwitchoverOptions {
    /// How long the candidate may take to apply the old master's last transaction once the old
    /// master is fenced; past it the switchover is refused and the old master unfenced
    /// (default 10 s).
    pub catch_up_timeout: Duration,
    /// Fencing the old master.
    pub fence: FenceOptions,
    /// Promoting the candidate.
    pub detach: DetachOptions,
    /// Re-pointing the other servers.
    pub repoint: RepointOptions,
}

impl Default for SwitchoverOptions {
    fn default() -> Self {
        SwitchoverOptions {
            catch_up_timeout: Duration::from_secs(10),
            fence: FenceOptions::new(),
            detach: DetachOptions::new().with_for_failover(true),
            repoint: RepointOptions::new(),
        }
    }
}

impl SwitchoverOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`SwitchoverOptions::catch_up_timeout`].
    pub fn with_catch_up_timeout(mut self, t: Duration) -> Self {
        self.catch_up_timeout = t;
        self
    }
    /// Sets [`SwitchoverOptions::repoint`].
    pub fn with_repoint(mut self, r: RepointOptions) -> Self {
        self.repoint = r;
        self
    }
}

/// A server that could not be re-pointed at the new master, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NotRepointed {
    /// The member's id.
    pub id: String,
    /// The error, as text (no secret: core errors never carry one).
    pub error: String,
    /// The error's class, `conflict` meaning the server needs a fresh snapshot.
    pub kind: String,
}

/// What [`switchover`] did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SwitchoverReport {
    /// The new master's id.
    pub new_master: String,
    /// The old master's last transaction, which the new master had applied before promotion.
    pub last_txn: ReplicationPosition,
    /// From the start of fencing to the new master accepting writes.
    pub write_unavailable: Duration,
    /// The whole switchover, re-pointing included.
    pub elapsed: Duration,
    /// Members now replicating from the new master (the old master included).
    pub repointed: Vec<String>,
    /// Members that could not be re-pointed.
    pub not_repointed: Vec<NotRepointed>,
}

/// Planned promotion of `candidate`, a replica of `old`, to master.
///
/// Fences `old` (refuses every write, privileged sessions included), waits at most
/// `catch_up_timeout` until `candidate` has applied `old`'s last transaction, promotes
/// `candidate` (detach `for_failover`, `enable_as_master`), re-points `others` and finally makes
/// `old` a replica of the new master. Nothing acknowledged by `old` is lost: it accepted no
/// write after the position the candidate applied.
///
/// # Errors
///
/// Before anything changes: [`Error::WrongRole`] when `candidate` replicates from nothing.
/// Before promotion (nothing changed, `old` unfenced and writable again): [`Error::Diverged`]
/// when `candidate` holds errant transactions; [`Error::Timeout`] when it does not catch up in
/// time; the errors of fencing. After promotion the call succeeds; servers that cannot be
/// re-pointed are listed in [`SwitchoverReport::not_repointed`].
///
/// # Cancel safety
///
/// Not cancel safe: a cancel while `old` is fenced leaves it fenced (call
/// [`ReplicationStrategy::unfence_writes`] on it, or run the switchover again: every step is
/// idempotent).
pub async fn switchover(
    old: Member<'_>,
    candidate: Member<'_>,
    others: &[Member<'_>],
    opts: &SwitchoverOptions,
) -> Result<SwitchoverReport> {
    let started = Instant::now();
    let last = candidate.strategy.get_last_txn().await?;
    if last.source.is_none() {
        return Err(Error::WrongRole {
            expected: Role::Replica,
            actual: Role::Master,
        });
    }
    if !last.errant.is_empty() {
        return Err(Error::Diverged {
            detail: format!(
                "switchover refused: {} executed {} itself; nothing was changed",
                candidate.id,
                last.errant.join(",")
            ),
        });
    }
    let fenced_at = Instant::now();
    let last_txn = old.strategy.fence_writes(&opts.fence).await?;
    if let Err(e) = candidate
        .strategy
        .wait_for_txn(&last_txn, opts.catch_up_timeout)
        .await
    {
        let note = format!(
            "switchover to {} refused: it did not apply {last_txn} in time; {} is unfenced and \
             nothing was changed",
            candidate.id, old.id
        );
        old.strategy.unfence_writes().await.map_err(|u| {
            u.with_note(&format!(
                "switchover refused, and unfencing {} failed: it still refuses writes",
                old.id
            ))
        })?;
        return Err(e.with_note(&note));
    }
    candidate
        .strategy
        .detach_replication_slave(&opts.detach)
        .await?;
    let write_unavailable = fenced_at.elapsed();
    candidate
        .strategy
        .enable_as_master(&EnableMasterOptions::new())
        .await?;
    let mut followers: Vec<Member<'_>> = others.to_vec();
    followers.push(old);
    let (repointed, not_repointed) = repoint(candidate, &followers, &opts.repoint).await;
    Ok(SwitchoverReport {
        new_master: candidate.id.to_owned(),
        last_txn,
        write_unavailable,
        elapsed: started.elapsed(),
        repointed,
        not_repointed,
    })
}

/// Re-points `followers` at `master`: one replication context each (made one at a time: they
/// are changes on the master), then the attaches concurrently.
async fn repoint(
    master: Member<'_>,
    followers: &[Member<'_>],
    opts: &RepointOptions,
) -> (Vec<String>, Vec<NotRepointed>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut attaches = Vec::new();
    for f in followers {
        let mut context = ReplicaContextOptions::new(f.id);
        if let Some(host) = f.host {
            context = context.with_replica_host(host);
        }
        match master.strategy.get_replica_context(&context).await {
            Ok(ctx) => attaches.push(async move {
                let r = f.strategy.attach_replica(&ctx, opts).await;
                (f.id, r)
            }),
            Err(e) => failed.push(not_repointed(f.id, &e)),
        }
    }
    for (id, r) in join_all(attaches).await {
        match r {
            Ok(_) => ok.push(id.to_owned()),
            Err(e) => failed.push(not_repointed(id, &e)),
        }
    }
    (ok, failed)
}

fn not_repointed(id: &str, e: &Error) -> NotRepointed {
    tracing::warn!(member = id, error = %e, "not re-pointed at the new master");
    NotRepointed {
        id: id.to_owned(),
        error: e.to_string(),
        kind: format!("{:?}", e.kind()).to_ascii_lowercase(),
    }
}

/// Options for [`failover`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailoverOptions {
    /// Stopping each candidate's receiver and applying what it received.
    pub drain: FenceOptions,
    /// Promoting the winner.
    pub detach: DetachOptions,
    /// Re-pointing the others.
    pub repoint: RepointOptions,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            drain: FenceOptions::new(),
            detach: DetachOptions::new().with_for_failover(true),
            repoint: RepointOptions::new(),
        }
    }
}

impl FailoverOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A candidate that was not chosen and what it holds that the new master lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Unrecovered {
    /// The candidate's id.
    pub id: String,
    /// The transactions (GTIDs, LSN range) the new master lacks.
    pub transactions: String,
}

/// What [`failover`] did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FailoverReport {
    /// The new master's id.
    pub new_master: String,
    /// Its position when it was promoted.
    pub promoted_at: ReplicationPosition,
    /// From the call to the new master accepting writes.
    pub time_to_writable: Duration,
    /// The whole failover.
    pub elapsed: Duration,
    /// Candidates never considered because they executed transactions no master sent
    /// (errant): they need a fresh snapshot.
    pub excluded: Vec<Unrecovered>,
    /// Transactions other candidates had that the new master lacks (empty when none: nothing
    /// was lost).
    pub lost: Vec<Unrecovered>,
    /// Members now replicating from the new master.
    pub repointed: Vec<String>,
    /// Members that could not be stopped or re-pointed.
    pub not_repointed: Vec<NotRepointed>,
}

/// Replaces an unreachable master by the most advanced of `candidates` (its former replicas).
///
/// Stops every candidate's receiver and lets it apply what it received (bounded), excludes
/// candidates with errant transactions, chooses the one whose applied position covers every
/// other's (on ties, the earliest in `candidates`), promotes it (detach `for_failover`,
/// `enable_as_master`) and re-points the other eligible candidates. What other candidates had
/// that the winner lacks is reported, never dropped silently.
///
/// # Errors
///
/// [`Error::NotFound`] when no candidate is reachable and free of errant transactions; the
/// errors of promoting the winner.
///
/// # Cancel safety
///
/// Not cancel safe: a cancel can leave receivers stopped or the winner promoted without its
/// followers; running the failover again with the same candidates completes it (the promoted
/// winner covers every other candidate, so it is chosen again).
pub async fn failover(candidates: &[Member<'_>], opts: &FailoverOptions) -> Result<FailoverReport> {
    let started = Instant::now();
    let drained = join_all(
        candidates
            .iter()
            .map(|c| async move { (*c, c.strategy.stop_receiver(&opts.drain).await) }),
    )
    .await;
    let mut not_repointed_list = Vec::new();
    let mut excluded = Vec::new();
    let mut eligible: Vec<(Member<'_>, LastTxn)> = Vec::new();
    for (c, r) in drained {
        match r {
            Ok(t) if t.errant.is_empty() => eligible.push((c, t)),
            Ok(t) => excluded.push(Unrecovered {
                id: c.id.to_owned(),
                transactions: t.errant.join(","),
            }),
            Err(e) => not_repointed_list.push(not_repointed(c.id, &e)),
        }
    }
    let winner = choose(&eligible).ok_or_else(|| Error::NotFound {
        what: "a reachable failover candidate without errant transactions".into(),
    })?;
    let (w, wtxn) = eligible[winner].clone();
    let lost = eligible
        .iter()
        .filter(|(c, _)| c.id != w.id)
        .filter_map(|(c, t)| {
            missing(&wtxn.applied, &t.applied).map(|m| Unrecovered {
                id: c.id.to_owned(),
                transactions: m,
            })
        })
        .collect();
    w.strategy.detach_replication_slave(&opts.detach).await?;
    let time_to_writable = started.elapsed();
    w.strategy
        .enable_as_master(&EnableMasterOptions::new())
        .await?;
    let followers: Vec<Member<'_>> = eligible
        .iter()
        .filter(|(c, _)| c.id != w.id)
        .map(|(c, _)| *c)
        .collect();
    let (repointed, mut failed) = repoint(w, &followers, &opts.repoint).await;
    not_repointed_list.append(&mut failed);
    Ok(FailoverReport {
        new_master: w.id.to_owned(),
        promoted_at: wtxn.applied,
        time_to_writable,
        elapsed: started.elapsed(),
        excluded,
        lost,
        repointed,
        not_repointed: not_repointed_list,
    })
}

/// The index of the candidate whose applied position covers the most others (all, normally),
/// the earliest on ties.
fn choose(eligible: &[(Member<'_>, LastTxn)]) -> Option<usize> {
    let score = |i: usize| {
        eligible
            .iter()
            .filter(|(_, t)| covers(&eligible[i].1.applied, &t.applied) == Some(true))
            .count()
    };
    let mut best: Option<(usize, usize)> = None;
    for i in 0..eligible.len() {
        let s = score(i);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}
