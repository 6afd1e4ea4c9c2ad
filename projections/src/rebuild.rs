//! Rebuilding a projection without downtime.
//!
//! The projection is replayed from position 0 into empty copies of its tables in a shadow
//! schema (its SQL is unqualified, so `search_path` points it there). A last transaction then
//! blocks the projection's writers (the append lock for an inline projection, the checkpoint
//! row for an asynchronous one), applies what arrived meanwhile, and swaps the tables in.
//! Readers see the old tables until that commit and the new ones after it.

use anyhow::Context;
use deadpool_postgres::{Pool, Transaction};
use keyledger_events::store::{park, read_types_until_unreadable};
use keyledger_events::writer::APPEND_LOCK_KEY;
use keyledger_events::{Notifier, Projection};

/// Events read from the log per catch-up transaction.
pub const BATCH: i64 = 5_000;

/// Rebuilds `projection` from position 0; returns the position it reached.
pub async fn rebuild(
    pool: &Pool,
    projection: &dyn Projection,
    inline: bool,
    notifier: &Notifier,
) -> anyhow::Result<i64> {
    let name = projection.name();
    let schema = format!("rebuild_{name}");
    let mut client = pool.get().await.context("Failed to get a connection")?;
    let mut ddl = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    // Secondary indexes are built once the tables are filled: one sort per index instead of
    // an index insert per row (a projection's own statements use only its keys).
    let mut indexes = String::new();
    for table in projection.tables() {
        let shadow = shadow_table(&client, &schema, table).await?;
        ddl.push_str(&shadow.table);
        indexes.push_str(&shadow.indexes);
    }
    client
        .batch_execute(&ddl)
        .await
        .with_context(|| format!("Failed to create the shadow tables of {name}"))?;

    // Catch up outside any lock, in batches.
    let mut position = 0;
    loop {
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL search_path = {schema}, public"))
            .await?;
        let applied = apply_after(&tx, projection, &mut position).await?;
        tx.commit().await?;
        if applied < BATCH as usize {
            break;
        }
    }
    client
        .batch_execute(&indexes)
        .await
        .with_context(|| format!("Failed to index the shadow tables of {name}"))?;

    // Swap under the lock that keeps the live projection from moving.
    let tx = client.transaction().await?;
    if inline {
        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"))
            .await?;
    } else {
        tx.execute(
            "SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await?;
    }
    tx.batch_execute(&format!("SET LOCAL search_path = {schema}, public"))
        .await?;
    // The head before the last reads: every event up to it is applied below or not the
    // projection's, so the checkpoint may start there.
    let head: i64 = tx
        .query_one("SELECT coalesce(max(position), 0) FROM public.events", &[])
        .await?
        .try_get(0)?;
    // Events set aside before are tried again; those that still fail are set aside anew.
    tx.execute(
        "DELETE FROM public.projection_parked WHERE projection = $1",
        &[&name],
    )
    .await?;
    while apply_after(&tx, projection, &mut position).await? > 0 {}
    position = position.max(head);
    let mut swap = String::from("SET LOCAL search_path = public;");
    for table in projection.tables() {
        swap.push_str(&format!(
            "DROP TABLE public.{table}; ALTER TABLE {schema}.{table} SET SCHEMA public;"
        ));
    }
    swap.push_str(&format!("DROP SCHEMA {schema};"));
    tx.batch_execute(&swap)
        .await
        .with_context(|| format!("Failed to swap in the rebuilt tables of {name}"))?;
    tx.execute(
        "INSERT INTO checkpoints (name, position, version) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = $2, version = $3, updated_at = now(), \
             failing_since = NULL",
        &[&name, &position, &projection.version()],
    )
    .await?;
    tx.commit().await?;
    notifier.reset_checkpoint(name, position);
    tracing::info!(projection = name, position, "projection rebuilt");
    Ok(position)
}

/// The DDL of an empty copy of a live table, in two parts.
struct ShadowTable {
    /// The table with its columns and constraints (keys and unique constraints included: the
    /// projection's upserts need them).
    table: String,
    /// Its other indexes, built after the table is filled.
    indexes: String,
}

/// An empty copy of `public.table` in `schema` whose indexes and constraints have the names of
/// the live table's, so that the swap changes no name (`LIKE … INCLUDING ALL` would name
/// indexes after their columns, and a later migration naming them would fail).
async fn shadow_table(
    client: &impl deadpool_postgres::GenericClient,
    schema: &str,
    table: &str,
) -> anyhow::Result<ShadowTable> {
    let live = format!("public.{table}");
    let shadow = format!("{schema}.{table}");
    // Columns, defaults, CHECK and NOT NULL constraints (with their names), storage, comments.
    let mut ddl = format!("CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL EXCLUDING INDEXES);");
    // Primary keys, unique and exclusion constraints: their index takes the constraint's name.
    let constraints = client
        .query(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::text::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname",
            &[&live],
        )
        .await
        .with_context(|| format!("Failed to read the constraints of {live}"))?;
    for row in constraints {
        let (name, definition): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        ddl.push_str(&format!(
            "ALTER TABLE {shadow} ADD CONSTRAINT \"{name}\" {definition};"
        ));
    }
    // Other indexes: the live definition, on the shadow table.
    let indexes = client
        .query(
            "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x \
             WHERE x.indrelid = $1::text::regclass AND NOT EXISTS ( \
                 SELECT 1 FROM pg_constraint c \
                 WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid) \
             ORDER BY x.indexrelid",
            &[&live],
        )
        .await
        .with_context(|| format!("Failed to read the indexes of {live}"))?;
    let mut index_ddl = String::new();
    for row in indexes {
        let definition: String = row.try_get(0)?;
        let on_live = format!(" ON {live} USING ");
        anyhow::ensure!(
            definition.matches(&on_live).count() == 1,
            "cannot copy the index {definition}"
        );
        index_ddl.push_str(&definition.replacen(&on_live, &format!(" ON {shadow} USING "), 1));
        index_ddl.push(';');
    }
    Ok(ShadowTable {
        table: ddl,
        indexes: index_ddl,
    })
}

async fn apply_after(
    tx: &Transaction<'_>,
    projection: &dyn Projection,
    position: &mut i64,
) -> anyhow::Result<usize> {
    // Only the projection's event types: a rebuild of `licenses` skips the request records.
    let (events, unreadable) =
        read_types_until_unreadable(tx, *position, projection.event_types(), BATCH).await?;
    if let Some(last) = events.last() {
        projection.apply(tx, &events).await?;
        *position = last.position;
    }
    match unreadable {
        // An event whose JSON does not parse cannot stop a rebuild: it is set aside.
        Some(unreadable) if events.is_empty() => {
            park(
                tx,
                projection.name(),
                unreadable.position,
                unreadable.event_id,
                &unreadable.event_type,
                &unreadable.reason,
            )
            .await?;
            *position = unreadable.position;
            Ok(1)
        }
        _ => Ok(events.len()),
    }
}
