//! The `pending_inbound` table: whatsapp-rust's pending-inbound buffer, kept in our database
//! instead of the device store (see `whatsapp::device_store`). A decrypted message waits here
//! from before its Signal state is saved until the durability hook has committed it.

use super::{Conn, Result, Store, dispatch, now};

/// A row to write (`message` set) or delete.
#[derive(Debug)]
pub struct Row {
    pub device: i64,
    pub chat: String,
    pub sender: String,
    pub id: String,
    pub message: Option<Vec<u8>>,
}

/// Applies the requests as if one after the other, in two statements: the last request for
/// a row decides whether it is written or deleted. For a [`Batcher`](super::Batcher).
pub async fn write(mut conn: Conn<'_>, requests: Vec<Vec<Row>>) -> Result<Vec<()>> {
    let answers = vec![(); requests.len()];
    let mut last = std::collections::HashMap::new();
    for row in requests.into_iter().flatten() {
        let key = (
            row.device,
            row.chat.clone(),
            row.sender.clone(),
            row.id.clone(),
        );
        last.insert(key, row);
    }
    let (writes, deletes): (Vec<Row>, Vec<Row>) =
        last.into_values().partition(|r| r.message.is_some());
    if !deletes.is_empty() {
        dispatch!(conn conn.reborrow(), pending::delete(&deletes))?;
    }
    if !writes.is_empty() {
        dispatch!(conn conn.reborrow(), pending::upsert(&writes, now()))?;
    }
    Ok(answers)
}

/// The buffered message of one device, if any.
pub async fn get(
    store: &Store,
    device: i64,
    chat: &str,
    sender: &str,
    id: &str,
) -> Result<Option<Vec<u8>>> {
    dispatch!(store, pending::get(device, chat, sender, id))
}

/// Deletes one device's rows older than `cutoff` (unix seconds); returns how many.
pub async fn delete_expired(store: &Store, device: i64, cutoff: i64) -> Result<u64> {
    store
        .write(move |mut conn| {
            Box::pin(
                async move { dispatch!(conn &mut conn, pending::delete_before(device, cutoff)) },
            )
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn row(device: i64, id: &str, message: Option<&[u8]>) -> Row {
        Row {
            device,
            chat: "c".into(),
            sender: "s".into(),
            id: id.into(),
            message: message.map(<[u8]>::to_vec),
        }
    }

    /// The last request for a row wins, and devices do not see each other's rows.
    #[tokio::test]
    async fn the_last_request_for_a_row_decides() {
        for db in testing::databases().await {
            let store = db.store().await;
            let batch = vec![
                vec![row(1, "a", Some(b"one")), row(1, "b", Some(b"two"))],
                vec![row(1, "a", None), row(2, "a", Some(b"three"))],
            ];
            store
                .write(move |conn| Box::pin(write(conn, batch)))
                .await
                .unwrap();
            assert_eq!(get(&store, 1, "c", "s", "a").await.unwrap(), None);
            assert_eq!(
                get(&store, 1, "c", "s", "b").await.unwrap().as_deref(),
                Some(&b"two"[..]),
                "{}",
                store.engine()
            );
            assert_eq!(
                get(&store, 2, "c", "s", "a").await.unwrap().as_deref(),
                Some(&b"three"[..])
            );
            assert_eq!(delete_expired(&store, 1, now() + 1).await.unwrap(), 1);
            assert_eq!(get(&store, 1, "c", "s", "b").await.unwrap(), None);
            assert!(get(&store, 2, "c", "s", "a").await.unwrap().is_some());
            db.drop().await;
        }
    }
}
