//! Moving a stream from one tool to the next (the `|` of a shell pipeline) through this
//! process, with large buffers, optionally keeping the head of the stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trove_guest_core::{Error, Result, RunningTool};

/// Buffer size of a copy (pipes deliver at most 64 KiB per read anyway).
const BUF: usize = 1 << 20;

/// Copies `from` to its end into `to`, then closes `to`; keeps the first `keep` bytes.
///
/// # Errors
///
/// [`Error::Io`] when reading or writing fails.
///
/// # Cancel safety
///
/// Not cancel safe: part of the stream may have been copied.
pub async fn copy(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    keep: usize,
) -> Result<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; BUF];
    let mut head = Vec::new();
    let mut total = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("read from the upstream tool", e))?;
        if n == 0 {
            break;
        }
        if head.len() < keep {
            let take = n.min(keep - head.len());
            head.extend_from_slice(&buf[..take]);
        }
        to.write_all(&buf[..n])
            .await
            .map_err(|e| Error::io("write to the downstream tool", e))?;
        total += n as u64;
    }
    to.shutdown()
        .await
        .map_err(|e| Error::io("close the downstream tool's input", e))?;
    Ok((total, head))
}

/// Runs `producer | consumer` to completion: both must exit cleanly. Returns the bytes that
/// passed and the first `keep` of them.
///
/// # Errors
///
/// The first tool failure (with its stderr tail), else a copy error.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future kills both tools.
pub async fn pipeline(
    mut producer: RunningTool,
    mut consumer: RunningTool,
    keep: usize,
) -> Result<(u64, Vec<u8>)> {
    let mut out = producer.take_stdout().expect("producer stdout is piped");
    let mut inp = consumer.take_stdin().expect("consumer stdin is piped");
    let copied = copy(&mut out, &mut inp, keep).await;
    drop(inp);
    drop(out);
    let p = producer.wait().await;
    let c = consumer.wait().await;
    p?;
    c?;
    copied
}

/// Runs `producer | tee file | consumer`: the stream goes to the consumer and into `file` (no
/// fsync: what `tee` does) as it passes. Returns the bytes that passed.
///
/// # Errors
///
/// The first tool failure, else a copy or file error.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future kills both tools.
pub async fn pipeline_tee(
    mut producer: RunningTool,
    mut consumer: RunningTool,
    file: &std::path::Path,
) -> Result<u64> {
    let mut out = producer.take_stdout().expect("producer stdout is piped");
    let mut inp = consumer.take_stdin().expect("consumer stdin is piped");
    let copied = async {
        let mut f = tokio::fs::File::create(file)
            .await
            .map_err(|e| Error::io(format!("create {}", file.display()), e))?;
        let mut buf = vec![0u8; BUF];
        let mut total = 0u64;
        loop {
            let n = out
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("read from the upstream tool", e))?;
            if n == 0 {
                break;
            }
            let (a, b) = tokio::join!(inp.write_all(&buf[..n]), f.write_all(&buf[..n]));
            a.map_err(|e| Error::io("write to the downstream tool", e))?;
            b.map_err(|e| Error::io(format!("write {}", file.display()), e))?;
            total += n as u64;
        }
        inp.shutdown()
            .await
            .map_err(|e| Error::io("close the downstream tool's input", e))?;
        f.flush()
            .await
            .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
        Ok::<u64, Error>(total)
    }
    .await;
    drop(inp);
    drop(out);
    let p = producer.wait().await;
    let c = consumer.wait().await;
    p?;
    c?;
    copied
}
