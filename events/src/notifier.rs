//! In-process notifications: the log's head position and each consumer's checkpoint.
//!
//! The writer advances the head after each commit; projectors advance their checkpoints. A
//! LISTEN task (`listen`) feeds the same values from other processes through PostgreSQL's
//! NOTIFY, so a projector or a consistency wait wakes up whoever committed. Polling stays as the
//! fallback wherever a notification could be missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Config, NoTls};

pub const EVENTS_CHANNEL: &str = "keyledger_events";
pub const CHECKPOINTS_CHANNEL: &str = "keyledger_checkpoints";

#[derive(Clone)]
pub struct Notifier {
    head: watch::Sender<i64>,
    checkpoints: Arc<Mutex<HashMap<String, watch::Sender<i64>>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            head: watch::Sender::new(0),
            checkpoints: Arc::default(),
        }
    }
}

impl Notifier {
    /// Records that the log reached `position` (never moves backwards).
    pub fn advance(&self, position: i64) {
        self.head.send_if_modified(|head| {
            let moved = position > *head;
            if moved {
                *head = position;
            }
            moved
        });
    }

    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Records that consumer `name` has applied everything up to `position`.
    pub fn checkpoint(&self, name: &str, position: i64) {
        self.checkpoint_sender(name).send_if_modified(|current| {
            let moved = position > *current;
            if moved {
                *current = position;
            }
            moved
        });
    }

    /// Forgets a consumer's checkpoint (after a rebuild reset it).
    pub fn reset_checkpoint(&self, name: &str, position: i64) {
        self.checkpoint_sender(name).send_replace(position);
    }

    pub fn watch_checkpoint(&self, name: &str) -> watch::Receiver<i64> {
        self.checkpoint_sender(name).subscribe()
    }

    fn checkpoint_sender(&self, name: &str) -> watch::Sender<i64> {
        let mut map = self
            .checkpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .clone()
    }

    fn handle(&self, channel: &str, payload: &str) {
        if channel == EVENTS_CHANNEL {
            if let Ok(position) = payload.parse() {
                self.advance(position);
            }
        } else if channel == CHECKPOINTS_CHANNEL
            && let Some((name, position)) = payload.rsplit_once(':')
            && let Ok(position) = position.parse()
        {
            self.checkpoint(name, position);
        }
    }
}

/// Follows NOTIFY from other processes until `stop` fires, reconnecting with back-off.
pub async fn listen(url: String, notifier: Notifier) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&url, &notifier).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(error = %error, "LISTEN connection lost; polling covers the gap");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(url: &str, notifier: &Notifier) -> Result<(), tokio_postgres::Error> {
    let config: Config = match url.parse() {
        Ok(config) => config,
        Err(e) => return Err(e),
    };
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx
                        .send((n.channel().to_owned(), n.payload().to_owned()))
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!(
            "LISTEN {EVENTS_CHANNEL}; LISTEN {CHECKPOINTS_CHANNEL}"
        ))
        .await?;
    while let Some((channel, payload)) = rx.recv().await {
        notifier.handle(&channel, &payload);
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
