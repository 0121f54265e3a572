//! Brings existing tables' TTLs up to the configured retention with `ALTER TABLE … MODIFY TTL`
//! (or `REMOVE TTL`), so changing `ttl` never needs tables recreated. Idempotent: a table whose
//! TTL already matches is left alone, so restarts with the same config issue no DDL.

use super::schema::{self, squeeze};
use super::{classify, ClickhouseExporter};
use clickhouse::Client;
use sluice_core::ExportError;

impl ClickhouseExporter {
    /// Compares every table's TTL in `system.tables` with the configured one and alters those
    /// that differ, logging each change.
    pub(super) async fn reconcile_ttl(&self, admin: &Client) -> Result<(), ExportError> {
        let db = &self.cfg.database;
        let on_cluster = self
            .cfg
            .cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default();
        for want in schema::ttl_tables(&self.cfg) {
            let engine_full: Option<String> = admin
                .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
                .bind(db.as_str())
                .bind(want.table.as_str())
                .fetch_optional()
                .await
                .map_err(|e| context(e, "reading table TTLs"))?;
            let Some(engine_full) = engine_full else {
                // Not there (create_schema = false and not created by hand): nothing to align.
                continue;
            };
            let have = schema::current_ttl(&engine_full);
            if have == want.expr.as_deref().map(squeeze) {
                continue;
            }
            let table = &want.table;
            let ddl = match &want.expr {
                Some(e) => format!("ALTER TABLE {db}.{table}{on_cluster} MODIFY TTL {e}"),
                None => format!("ALTER TABLE {db}.{table}{on_cluster} REMOVE TTL"),
            };
            admin
                .query(&ddl)
                .execute()
                .await
                .map_err(|e| context(e, "changing a table TTL"))?;
            tracing::info!(
                table = %format!("{db}.{table}"),
                signal = want.signal.as_str(),
                old = have.as_deref().unwrap_or("none"),
                new = want.expr.as_deref().unwrap_or("none"),
                "ClickHouse retention changed: {ddl}"
            );
        }
        Ok(())
    }
}

fn context(e: clickhouse::error::Error, what: &str) -> ExportError {
    let mut err = classify(e);
    err.message = format!("{what}: {}", err.message);
    err
}
