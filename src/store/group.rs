//! Group commit for the small writes many delivery tasks make at once (outbox marks, Telegram send
//! slots): the task that finds no commit under way writes every waiting request in one transaction.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::StoreError;

type Waiting<T, O> = Vec<(T, oneshot::Sender<Result<O, StoreError>>)>;

/// Requests of type `T` waiting to be committed together, each answered with an `O`.
pub(crate) struct GroupCommit<T, O> {
    waiting: Mutex<Waiting<T, O>>,
    // Held while a group commits; those who queue behind it meanwhile form the next group.
    turn: tokio::sync::Mutex<()>,
}

impl<T, O> Default for GroupCommit<T, O> {
    fn default() -> Self {
        GroupCommit {
            waiting: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T, O> GroupCommit<T, O> {
    /// Commits `request`, alone or with others that arrive meanwhile, through `commit`, which
    /// must answer each request it is given, in order, or fail them all.
    pub(crate) async fn submit<F, Fut>(&self, request: T, commit: F) -> Result<O, StoreError>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Vec<O>, StoreError>>,
    {
        let (answer, mut answered) = oneshot::channel();
        self.lock_waiting().push((request, answer));
        let _turn = self.turn.lock().await;
        // A group that committed while this one queued may have taken this request along.
        match answered.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let (requests, answers): (Vec<T>, Vec<_>) = std::mem::take(&mut *self.lock_waiting())
            .into_iter()
            .unzip();
        let count = requests.len();
        match commit(requests).await {
            Ok(outputs) if outputs.len() == count => {
                for (answer, output) in answers.into_iter().zip(outputs) {
                    let _ = answer.send(Ok(output));
                }
            }
            Ok(outputs) => {
                let e = format!(
                    "a group commit answered {} of {count} requests",
                    outputs.len()
                );
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Corrupt(e.clone())));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Grouped(text.clone())));
                }
            }
        }
        answered.try_recv().unwrap_or_else(|_| Err(abandoned()))
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting<T, O>> {
        // The lock guards a push or a take, which cannot panic halfway.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn abandoned() -> StoreError {
    StoreError::Grouped(
        "the write this was grouped with was abandoned before it committed; it will be retried"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn requests_that_arrive_during_a_commit_share_the_next() {
        let group: Arc<GroupCommit<u32, u32>> = Arc::default();
        let commits = Arc::new(AtomicUsize::new(0));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let held = Arc::new(tokio::sync::Mutex::new(Some(held)));
        let submit = |n: u32| {
            let (group, commits, held) = (group.clone(), commits.clone(), held.clone());
            tokio::spawn(async move {
                group
                    .submit(n, |requests| async move {
                        commits.fetch_add(1, Ordering::SeqCst);
                        // The first commit waits until every other request has queued.
                        if let Some(held) = held.lock().await.take() {
                            let _ = held.await;
                        }
                        Ok(requests.iter().map(|r| r * 10).collect())
                    })
                    .await
            })
        };
        let mut tasks = vec![submit(0)];
        while commits.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tasks.extend((1..10).map(submit));
        while group.lock_waiting().len() < 9 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().unwrap());
        }
        assert_eq!(answers, (0..10).map(|n| n * 10).collect::<Vec<_>>());
        assert_eq!(
            commits.load(Ordering::SeqCst),
            2,
            "one alone, then nine together"
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_request_in_it() {
        let group: GroupCommit<u32, u32> = GroupCommit::default();
        let result = group
            .submit(1, |_| async {
                Err(StoreError::Corrupt("disk on fire".into()))
            })
            .await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("disk on fire"), "{error}");
    }
}
