//! Comparing positions of servers that replicated from one master: who holds what.

use crate::position::{Lsn, ReplicationPosition};

/// Whether a server at `a` holds every transaction a server at `b` holds: GTID containment
/// (MariaDB per domain, MySQL sets), `(timeline, LSN)` order on PostgreSQL. `None` when the two
/// positions are of different kinds and cannot be compared.
pub fn covers(a: &ReplicationPosition, b: &ReplicationPosition) -> Option<bool> {
    use ReplicationPosition as P;
    Some(match (a, b) {
        (P::MariadbGtid(a), P::MariadbGtid(b)) => a.contains(b),
        (P::MysqlGtid(a), P::MysqlGtid(b)) => a.contains(b),
        (P::PostgresqlWal(a), P::PostgresqlWal(b)) => (a.timeline, a.lsn) >= (b.timeline, b.lsn),
        _ => lsn(a)? >= lsn(b)?,
    })
}

fn lsn(p: &ReplicationPosition) -> Option<Lsn> {
    match p {
        ReplicationPosition::PostgresqlLsn(l) => Some(*l),
        ReplicationPosition::PostgresqlWal(w) => Some(w.lsn),
        _ => None,
    }
}

/// What a server at `b` holds that a server at `a` lacks, described for an operator (GTIDs per
/// domain, a GTID set, or an LSN range); `None` when `a` covers `b`.
pub fn missing(a: &ReplicationPosition, b: &ReplicationPosition) -> Option<String> {
    use ReplicationPosition as P;
    if covers(a, b) == Some(true) {
        return None;
    }
    Some(match (a, b) {
        (P::MariadbGtid(a), P::MariadbGtid(b)) => b
            .gtids()
            .filter_map(|g| {
                let have = a.gtids().find(|m| m.domain == g.domain);
                match have {
                    Some(m) if m.sequence >= g.sequence => None,
                    Some(m) => Some(format!(
                        "domain {}: sequence {} to {} (up to {}-{}-{})",
                        g.domain,
                        m.sequence + 1,
                        g.sequence,
                        g.domain,
                        g.server,
                        g.sequence
                    )),
                    None => Some(format!(
                        "domain {}: up to {}-{}-{}",
                        g.domain, g.domain, g.server, g.sequence
                    )),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        (P::MysqlGtid(a), P::MysqlGtid(b)) => b.difference(a).to_string(),
        _ => match (lsn(a), lsn(b)) {
            (Some(x), Some(y)) => format!("WAL from {x} to {y}"),
            _ => format!("{b} (not comparable with {a})"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::WalPosition;

    fn m(s: &str) -> ReplicationPosition {
        ReplicationPosition::MariadbGtid(s.parse().unwrap())
    }

    #[test]
    fn mariadb_positions_are_compared_per_domain_and_gaps_are_named() {
        assert_eq!(covers(&m("0-1-10,1-2-5"), &m("0-1-9")), Some(true));
        assert_eq!(covers(&m("0-1-9"), &m("0-1-10")), Some(false));
        assert_eq!(missing(&m("0-1-10"), &m("0-1-9")), None);
        let gap = missing(&m("0-1-8"), &m("0-1-10,3-3-1")).unwrap();
        assert!(gap.contains("sequence 9 to 10"), "{gap}");
        assert!(gap.contains("domain 3: up to 3-3-1"), "{gap}");
    }

    #[test]
    fn postgres_positions_order_by_timeline_then_lsn() {
        let w = |tl, l| {
            ReplicationPosition::PostgresqlWal(WalPosition {
                lsn: Lsn(l),
                timeline: tl,
            })
        };
        assert_eq!(covers(&w(2, 10), &w(1, 99)), Some(true));
        assert_eq!(covers(&w(1, 10), &w(1, 11)), Some(false));
        assert_eq!(
            covers(&ReplicationPosition::PostgresqlLsn(Lsn(5)), &w(1, 5)),
            Some(true)
        );
        assert_eq!(covers(&m("0-1-1"), &w(1, 5)), None);
        assert!(
            missing(&w(1, 0x10), &w(1, 0x20))
                .unwrap()
                .starts_with("WAL from")
        );
    }
}
