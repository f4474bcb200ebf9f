//! A TCP proxy between callbot and the test Redis that a test can cut and restore, so "Redis
//! went away" is tested without restarting the Redis other tests share.
//!
//! Cut: every open connection is closed and new ones are accepted and closed at once (a
//! connect fails fast, as against a restarting server). Restore: connections pass again.
//! Written here because it is thirty lines on tokio; a proxy crate would bring more than it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct RedisProxy {
    /// The Redis URL to give callbot (this proxy, same database).
    pub url: String,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: open connections watch it and close.
    cuts: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    /// A proxy to the Redis of `redis_url` (`redis://host:port/db`).
    pub async fn start(redis_url: &str) -> Self {
        let target = url::Url::parse(redis_url).expect("a Redis URL");
        let upstream = format!(
            "{}:{}",
            target.host_str().expect("a host"),
            target.port().unwrap_or(6379)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut url = target.clone();
        url.set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let accept = tokio::spawn({
            let (up, cuts) = (up.clone(), cuts.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            url: url.to_string(),
            up,
            cuts,
            accept,
        }
    }

    /// Redis goes away: open connections close, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Redis is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
