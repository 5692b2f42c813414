//! A per-node lease held in Slurm itself, in the node's `Comment`, so that of several replicas
//! of a watcher (each with its own alert state, all told of the same faults) only one acts on a
//! node: the drain, the resume, a remediation run once, by the replica holding the lease.
//!
//! The lease is the token `ugro-lease:<holder>:<until>` (until in Unix seconds) as the last word
//! of the comment; any other text there is an operator's and is kept as it was. Slurm has no
//! compare-and-set, so taking the lease is Fischer's timed mutual exclusion over that one
//! register: read it; if it is free, expired or ours, write ours within `settle / 2` of the read
//! (else give up this try); wait `settle`; read again and act only if it is still ours. Two
//! replicas that both found it free both write, but the later write lands before the earlier
//! writer's re-read, so only one sees itself there. Expiry compares wall clocks of the replicas'
//! hosts: keep them in step (NTP) far closer than `ttl`. Renewing a lease of ours that is
//! good for more than `settle` is a read and a write, without the wait: while it is valid no
//! other replica writes.
//!
//! Remediation (`crate::remedy`) takes the same lease before each of its jobs, so that of the
//! replicas only the holder remediates, verifies and resumes a node.
//!
//! A replica that finds another's unexpired lease treats the action as a retryable failure: it
//! retries with its receiver's backoff, so when the holder dies before acting, the other one
//! acts once the lease has expired (failover within `ttl`), against the node's state at that
//! moment — a node already drained or already resumed is left alone, as always.

use std::time::{Duration, Instant, SystemTime};

/// What the lease token starts with.
pub const PREFIX: &str = "ugro-lease:";

/// A slurm_drain receiver's lease settings (`lease:` in its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConf {
    /// This replica's name in the token (letters, digits, `.`, `-`, `_`, `@`).
    pub holder: String,
    /// How long a lease lasts after its holder last acted on the node.
    pub ttl: Duration,
    /// How long to wait after writing before re-reading (Fischer's delay); writes must land
    /// within half of it.
    pub settle: Duration,
}

/// A lease read from a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// Until when, Unix seconds.
    pub until: u64,
}

/// What a replica may do about a node's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No lease, or an expired one, or ours: take it.
    Take,
    /// Another replica holds it.
    Held(Lease),
}

/// Whether `holder` is a usable holder name (it must survive a trip through the comment).
pub fn valid_holder(holder: &str) -> bool {
    !holder.is_empty()
        && holder.len() <= 64
        && holder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// The lease in a node comment, if its last word is one.
pub fn parse(comment: &str) -> Option<Lease> {
    let last = comment.split_whitespace().last()?;
    let (holder, until) = last.strip_prefix(PREFIX)?.rsplit_once(':')?;
    Some(Lease {
        holder: holder.to_owned(),
        until: until.parse().ok()?,
    })
}

/// The comment with `lease` as its last word in place of any lease there, the rest kept.
pub fn with_lease(comment: &str, lease: &Lease) -> String {
    let mut words: Vec<&str> = comment.split_whitespace().collect();
    if words.last().is_some_and(|w| w.starts_with(PREFIX)) {
        words.pop();
    }
    let token = format!("{PREFIX}{}:{}", lease.holder, lease.until);
    words.push(&token);
    words.join(" ")
}

/// What `holder` may do with the lease in `comment` at `now` (Unix seconds).
pub fn judge(comment: &str, holder: &str, now: u64) -> Verdict {
    match parse(comment) {
        Some(l) if l.holder != holder && l.until > now => Verdict::Held(l),
        _ => Verdict::Take,
    }
}

/// Wall-clock seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a try to take the lease did not end with it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds it.
    Held(Lease),
    /// Our write landed too late after the read to be safe; try again.
    Slow(Duration),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Held(l) => write!(
                f,
                "replica {} holds the lease until {} (unix), left to it for now",
                l.holder, l.until
            ),
            Lost::Slow(d) => write!(
                f,
                "the lease write took {}ms after the read, more than settle/2: not taken",
                d.as_millis()
            ),
        }
    }
}

/// How the lease reaches Slurm: read a node's comment, write it.
pub trait Register {
    /// The error of a read or write.
    type Error;
    /// The node's comment now (empty when none).
    fn read(&self) -> Result<String, Self::Error>;
    /// Replaces the node's comment.
    fn write(&self, comment: &str) -> Result<(), Self::Error>;
}

/// Fischer's protocol (see the module): `Ok(Ok(()))` when the lease is ours until
/// now + ttl, `Ok(Err(lost))` when it is not, `Err` when the register failed.
pub fn take<R: Register>(
    reg: &R,
    conf: &LeaseConf,
    sleep: &dyn Fn(Duration),
) -> Result<Result<(), Lost>, R::Error> {
    let started = Instant::now();
    let comment = reg.read()?;
    let now = unix_now();
    if let Verdict::Held(l) = judge(&comment, &conf.holder, now) {
        return Ok(Err(Lost::Held(l)));
    }
    // Renewing a lease of ours that is good beyond the settle wait needs no wait: while it
    // is unexpired no other replica writes (each reads it as held), and any write begun
    // before our take landed before its re-read.
    let renewal = parse(&comment).is_some_and(|l| {
        l.holder == conf.holder && l.until > now.saturating_add(conf.settle.as_secs().max(1))
    });
    let mine = Lease {
        holder: conf.holder.clone(),
        until: now.saturating_add(conf.ttl.as_secs().max(1)),
    };
    reg.write(&with_lease(&comment, &mine))?;
    let took = started.elapsed();
    if took > conf.settle / 2 {
        return Ok(Err(Lost::Slow(took)));
    }
    if renewal {
        return Ok(Ok(()));
    }
    sleep(conf.settle);
    let after = reg.read()?;
    Ok(match parse(&after) {
        Some(l) if l.holder == conf.holder => Ok(()),
        Some(l) => Err(Lost::Held(l)),
        // Someone removed the token (an operator clearing the comment): nobody holds it.
        None => Err(Lost::Slow(took)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn l(holder: &str, until: u64) -> Lease {
        Lease {
            holder: holder.into(),
            until,
        }
    }

    #[test]
    fn lease_token_is_the_last_word_and_operator_text_is_kept() {
        assert_eq!(parse("ugro-lease:a:100"), Some(l("a", 100)));
        assert_eq!(parse("rma 42 ugro-lease:w1.x@h:7"), Some(l("w1.x@h", 7)));
        assert_eq!(parse("ugro-lease:a:100 later text"), None);
        assert_eq!(parse("ugro-lease:a:soon"), None);
        assert_eq!(parse(""), None);
        assert_eq!(with_lease("", &l("a", 5)), "ugro-lease:a:5");
        assert_eq!(with_lease("rma 42", &l("a", 5)), "rma 42 ugro-lease:a:5");
        assert_eq!(
            with_lease("rma 42 ugro-lease:b:9", &l("a", 5)),
            "rma 42 ugro-lease:a:5"
        );
    }

    #[test]
    fn a_lease_of_another_replica_holds_until_it_expires_and_ours_is_always_renewable() {
        assert_eq!(judge("", "a", 10), Verdict::Take);
        assert_eq!(judge("ugro-lease:b:11", "a", 10), Verdict::Held(l("b", 11)));
        assert_eq!(judge("ugro-lease:b:10", "a", 10), Verdict::Take);
        assert_eq!(judge("ugro-lease:a:99", "a", 10), Verdict::Take);
        assert_eq!(judge("just a note", "a", 10), Verdict::Take);
    }

    #[test]
    fn holder_names_that_would_not_survive_the_comment_are_refused() {
        assert!(valid_holder("watch-1.rack2@gw"));
        for bad in ["", "a b", "a:b", "x\n", &"a".repeat(65)] {
            assert!(!valid_holder(bad), "{bad:?}");
        }
    }

    /// A register whose reads return what a script says (the other replica's writes landing
    /// in between) and that records our writes.
    struct Scripted {
        reads: RefCell<Vec<String>>,
        writes: RefCell<Vec<String>>,
    }

    impl Scripted {
        fn new(reads: &[&str]) -> Scripted {
            Scripted {
                reads: RefCell::new(reads.iter().rev().map(|r| (*r).to_owned()).collect()),
                writes: RefCell::new(Vec::new()),
            }
        }
    }

    impl Register for Scripted {
        type Error = ();
        fn read(&self) -> Result<String, ()> {
            // Once the script is done, a read sees our own last write.
            let w = self.writes.borrow().last().cloned().unwrap_or_default();
            Ok(self.reads.borrow_mut().pop().unwrap_or(w))
        }
        fn write(&self, c: &str) -> Result<(), ()> {
            self.writes.borrow_mut().push(c.to_owned());
            Ok(())
        }
    }

    fn conf(holder: &str, settle: Duration) -> LeaseConf {
        LeaseConf {
            holder: holder.into(),
            ttl: Duration::from_secs(600),
            settle,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_free_lease_is_taken_after_the_settle_wait_keeping_the_operator_comment() {
        let reg = Scripted::new(&["rma 42"]);
        let waited = RefCell::new(Vec::new());
        let r = take(&reg, &conf("a", HOUR), &|d| waited.borrow_mut().push(d));
        assert_eq!(r, Ok(Ok(())));
        assert_eq!(*waited.borrow(), [HOUR]);
        let w = reg.writes.borrow();
        assert_eq!(w.len(), 1);
        let lease = parse(&w[0]).unwrap();
        assert_eq!(lease.holder, "a");
        assert!(lease.until >= unix_now() + 599, "{lease:?}");
        assert!(w[0].starts_with("rma 42 "), "{}", w[0]);
    }

    #[test]
    fn another_replicas_unexpired_lease_is_left_alone_without_a_write() {
        let far = unix_now() + 3600;
        let reg = Scripted::new(&[&format!("ugro-lease:b:{far}")]);
        let r = take(&reg, &conf("a", HOUR), &|_| {});
        assert_eq!(r, Ok(Err(Lost::Held(l("b", far)))));
        assert!(reg.writes.borrow().is_empty());
    }

    #[test]
    fn when_the_other_replicas_write_lands_during_the_settle_only_it_holds_the_lease() {
        // Both read a free lease; b's write lands after a's, so a's re-read sees b.
        let far = unix_now() + 600;
        let reg = Scripted::new(&["", &format!("ugro-lease:b:{far}")]);
        let r = take(&reg, &conf("a", HOUR), &|_| {});
        assert_eq!(r, Ok(Err(Lost::Held(l("b", far)))));
        // And b, re-reading its own write, holds it: exactly one of the two.
        let reg = Scripted::new(&[""]);
        assert_eq!(take(&reg, &conf("b", HOUR), &|_| {}), Ok(Ok(())));
    }

    #[test]
    fn our_own_unexpired_lease_is_renewed_without_the_settle_wait() {
        let far = unix_now() + 3600;
        let reg = Scripted::new(&[&format!("rma ugro-lease:a:{far}")]);
        let waited = RefCell::new(0);
        let r = take(&reg, &conf("a", Duration::from_secs(2)), &|_| {
            *waited.borrow_mut() += 1;
        });
        assert_eq!(r, Ok(Ok(())));
        assert_eq!(*waited.borrow(), 0);
        let w = reg.writes.borrow();
        let lease = parse(&w[0]).unwrap();
        assert!(
            lease.until >= unix_now() + 599 && lease.until < far,
            "{lease:?}"
        );
        // One about to expire is taken afresh, with the wait.
        let soon = unix_now() + 1;
        let reg = Scripted::new(&[&format!("ugro-lease:a:{soon}")]);
        take(&reg, &conf("a", Duration::from_secs(2)), &|_| {
            *waited.borrow_mut() += 1;
        })
        .unwrap()
        .unwrap();
        assert_eq!(*waited.borrow(), 1);
    }

    #[test]
    fn an_expired_lease_of_a_dead_replica_is_taken_over() {
        let reg = Scripted::new(&["ugro-lease:b:1000"]);
        assert_eq!(take(&reg, &conf("a", HOUR), &|_| {}), Ok(Ok(())));
        assert_eq!(parse(&reg.writes.borrow()[0]).unwrap().holder, "a");
    }

    #[test]
    fn a_write_slower_than_half_the_settle_wait_does_not_take_the_lease() {
        let reg = Scripted::new(&[""]);
        let r = take(&reg, &conf("a", Duration::ZERO), &|_| {});
        assert!(matches!(r, Ok(Err(Lost::Slow(_)))), "{r:?}");
    }
}
