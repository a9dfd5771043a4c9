//! Concurrent writers on PostgreSQL, each on a connection of its own: random
//! streams and batch sizes, random delays inside the transaction, ~10%
//! rollbacks, and (if asked) ids drawn before the transaction has an id —
//! everything that makes ids commit out of order.

use std::time::Duration;

use tokio_postgres::NoTls;

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct Writers {
    /// Number of writers.
    pub writers: usize,
    /// Events to commit in all.
    pub target: usize,
    /// Seed of every writer's choices.
    pub seed: u64,
    /// Half the transactions draw their ids (`nextval`) before their first
    /// write, so the id is older than the transaction id.
    pub ids_first: bool,
}

/// Run the writers to completion; returns (events committed, rollbacks).
pub async fn run(url: &str, plan: Writers) -> (usize, usize) {
    let mut tasks = Vec::new();
    for w in 0..plan.writers {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move { write(&url, plan, w).await }));
    }
    let (mut written, mut rollbacks) = (0, 0);
    for task in tasks {
        let (w, r) = task.await.unwrap();
        written += w;
        rollbacks += r;
    }
    (written, rollbacks)
}

async fn write(url: &str, plan: Writers, w: usize) -> (usize, usize) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut rng = plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(w as u64 + 1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut written, mut rolled_back) = (0usize, 0usize);
    while written < plan.target / plan.writers {
        let stream = format!("stress-{}", next() % 64);
        let batch = 1 + (next() % 4) as i32;
        // The documented discipline: REPEATABLE READ, version check first.
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
        let mut ids = Vec::new();
        if plan.ids_first && next() % 2 == 0 {
            for _ in 0..batch {
                ids.push(client.query_one("SELECT nextval('events_id_seq')", &[]).await.unwrap().get::<_, i64>(0));
            }
            tokio::time::sleep(Duration::from_micros(next() % 2000)).await;
        }
        let current: i32 = client
            .query_one("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", &[&stream])
            .await
            .unwrap()
            .get(0);
        let mut ok = true;
        for v in 1..=batch {
            if next() % 8 == 0 {
                tokio::time::sleep(Duration::from_micros(next() % 3000)).await;
            }
            let version = current + v;
            let inserted =
                match ids.get(v as usize - 1) {
                    Some(id) => {
                        client
                            .execute(
                                "INSERT INTO events (id, stream_id, version, event_type, data) \
                             VALUES ($1, $2, $3, 'tick', '{}')",
                                &[id, &stream, &version],
                            )
                            .await
                    }
                    None => client
                        .execute(
                            "INSERT INTO events (stream_id, version, event_type, data) VALUES ($1, $2, 'tick', '{}')",
                            &[&stream, &version],
                        )
                        .await,
                };
            if inserted.is_err() {
                ok = false; // a concurrent writer took the version: retry later
                break;
            }
        }
        if ok && next() % 10 != 0 {
            if client.batch_execute("COMMIT").await.is_ok() {
                written += batch as usize;
            }
        } else {
            client.batch_execute("ROLLBACK").await.unwrap();
            rolled_back += 1;
        }
    }
    (written, rolled_back)
}
