//! MySQL-family parsers: the backup tools' binlog info files (alone and inside an xbstream,
//! through the tap that reads them while the backup streams) and replica status rows.

use rand::Rng;
use rand::rngs::SmallRng;
use tokio::io::AsyncReadExt;
use trove_guest_mysql::flavor::FlavorKind;
use trove_guest_mysql::xbstream::{BINLOG_INFO_FILES, BinlogInfo, BinlogInfoTap};

use super::archive::xbstream_stream;
use crate::inputs;

fn info_text(rng: &mut SmallRng) -> String {
    let file = match rng.random_range(0..5) {
        0 => inputs::word(rng),
        1 => "../mysql-bin.000001".into(),
        _ => format!("mysql-bin.{:06}", rng.random_range(0..1_000_000u32)),
    };
    let pos = match rng.random_range(0..4) {
        0 => inputs::token(rng).to_owned(),
        _ => rng.random::<u32>().to_string(),
    };
    let gtid = match rng.random_range(0..4) {
        0 => String::new(),
        1 => "0-1-42,1-2-7".into(),
        2 => "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n3E11FA47-71CA-11E1-9E33-C80AA9429563:1-9"
            .into(),
        _ => inputs::word(rng),
    };
    if gtid.is_empty() && rng.random_bool(0.5) {
        format!("{file}\t{pos}\n")
    } else {
        format!("{file}\t{pos}\t{gtid}\n")
    }
}

pub(crate) fn gen_binlog_info(rng: &mut SmallRng) -> Vec<u8> {
    let mut text = info_text(rng).into_bytes();
    if rng.random_bool(0.7) {
        inputs::mutate(rng, &mut text);
    }
    if rng.random_bool(0.4) {
        // Inside a backup stream, as the tap sees it.
        let name = BINLOG_INFO_FILES[rng.random_range(0..2)]
            .as_bytes()
            .to_vec();
        let mut s = xbstream_stream(rng, &[(name, text)]);
        if rng.random_bool(0.3) {
            inputs::mutate(rng, &mut s);
        }
        return s;
    }
    inputs::finish(rng, text)
}

pub(crate) fn run_binlog_info(data: &[u8]) {
    let text = if data.starts_with(b"XBSTCK01") {
        let step = 1 + data.len() % 61;
        let mut tap = BinlogInfoTap::new(Steps { data, step });
        let mut sink = Vec::new();
        futures::executor::block_on(tap.read_to_end(&mut sink)).expect("in-memory read");
        assert_eq!(sink, data, "the tap passes every byte on unchanged");
        match tap.binlog_info() {
            Ok((_, t)) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        inputs::text(data).into_owned()
    };
    if let Ok(info) = BinlogInfo::parse(&text) {
        let _ = info.log_file.as_str();
        let _ = (info.mariadb_gtid(), info.mysql_gtid());
    }
}

/// A reader handing out at most `step` bytes per read.
struct Steps<'a> {
    data: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Steps<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

const COLUMNS: &[&str] = &[
    "Master_Host",
    "Source_Host",
    "Master_Port",
    "Source_Port",
    "Slave_IO_Running",
    "Replica_IO_Running",
    "Slave_SQL_Running",
    "Replica_SQL_Running",
    "Seconds_Behind_Master",
    "Seconds_Behind_Source",
    "Last_IO_Error",
    "Last_SQL_Error",
    "Gtid_IO_Pos",
    "Retrieved_Gtid_Set",
    "Executed_Gtid_Set",
    "Relay_Master_Log_File",
];

pub(crate) fn gen_status_row(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = String::from(if rng.random_bool(0.5) {
        "mariadb"
    } else {
        "mysql"
    });
    for c in COLUMNS {
        if rng.random_bool(0.7) {
            let v = match *c {
                "Master_Port"
                | "Source_Port"
                | "Seconds_Behind_Master"
                | "Seconds_Behind_Source" => {
                    if rng.random_bool(0.7) {
                        rng.random_range(0..70000u32).to_string()
                    } else {
                        inputs::token(rng).to_owned()
                    }
                }
                "Gtid_IO_Pos" => "0-1-42,1-2-3".into(),
                "Retrieved_Gtid_Set" => "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5".into(),
                c if c.ends_with("Running") => {
                    ["Yes", "No", "Connecting", ""][rng.random_range(0..4)].into()
                }
                _ => inputs::word(rng),
            };
            let v = if rng.random_bool(0.1) {
                "\\N".to_owned()
            } else {
                v
            };
            s.push_str(&format!("\n{c}\t{v}"));
        }
    }
    inputs::finish(rng, s.into_bytes())
}

/// `kind` on the first line, then `column<TAB>value` lines (`\N` is NULL).
pub(crate) fn run_status_row(data: &[u8]) {
    let text = inputs::text(data);
    let mut lines = text.split('\n');
    let kind = if lines.next() == Some("mysql") {
        FlavorKind::Mysql
    } else {
        FlavorKind::MariaDb
    };
    let columns: Vec<(String, Option<String>)> = lines
        .map(|l| {
            let (c, v) = l.split_once('\t').unwrap_or((l, ""));
            (c.to_owned(), (v != "\\N").then(|| v.to_owned()))
        })
        .collect();
    let st = trove_guest_mysql::fuzzing::replica_status(&columns, kind);
    assert!(st.role.is_some());
}
