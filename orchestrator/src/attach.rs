//! The operator's terminal during an interactive session, independent of the
//! engine: raw mode (restored on every exit path), the window size, and
//! standard input read on a plain thread.
//!
//! It never interprets what the operator types: Ctrl-C and every other key
//! reach the agent as bytes.

use tokio::sync::mpsc;

/// Raw mode while alive; the terminal is restored on drop, also after an error.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Enables raw mode when standard input is a terminal.
    pub fn enable() -> Option<RawMode> {
        crossterm::terminal::enable_raw_mode()
            .ok()
            .map(|()| RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Whether standard input is a terminal (interactive session).
pub fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// Columns and rows of the operator's terminal.
pub fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok()
}

/// Standard input, chunk by chunk. A plain thread reads it: a blocked tokio
/// stdin read would hold the runtime open after the session ended. The
/// channel closes at end of input.
pub fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
