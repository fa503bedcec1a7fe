//! An SMTP server over TCP for tests: real SMTP dialogue (EHLO, MAIL, RCPT, DATA, RSET, QUIT),
//! the messages it accepted, and on demand a scripted reply to the end of DATA (451, 550, ...).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct Inner {
    accepted: Vec<Mail>,
    /// Replies for the next DATA ends, instead of "250".
    replies: VecDeque<String>,
    attempts: usize,
}

#[derive(Clone)]
pub struct FakeSmtp {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = session(socket, shared).await;
                });
            }
        });
        FakeSmtp { port, inner }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// The next message's end of DATA is answered with `reply` (e.g. "451 4.3.0 Try again later").
    pub fn reply_next(&self, reply: &str) {
        self.inner
            .lock()
            .unwrap()
            .replies
            .push_back(reply.to_owned());
    }

    pub fn accepted(&self) -> Vec<Mail> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// Messages sent to the end of DATA, accepted or not.
    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }
}

async fn session(socket: tokio::net::TcpStream, inner: Arc<Mutex<Inner>>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 fake.test ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-fake.test\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
        } else if upper.starts_with("HELO") {
            "250 fake.test".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().to_owned();
            to.clear();
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            "250 2.1.5 OK".into()
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line
                    .strip_prefix('.')
                    .filter(|_| line.starts_with(".."))
                    .unwrap_or(&line);
                data.push_str(unstuffed);
            }
            let mut state = inner.lock().unwrap();
            state.attempts += 1;
            match state.replies.pop_front() {
                Some(reply) => reply,
                None => {
                    state.accepted.push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    "250 2.0.0 OK queued as 1234".into()
                }
            }
        } else if upper == "RSET" {
            to.clear();
            "250 2.0.0 OK".into()
        } else if upper == "NOOP" {
            "250 2.0.0 OK".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not recognized".into()
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}
