//! A fresh schema in the test PostgreSQL database, for one test. Shared by the store's unit
//! tests (`test_support.rs`) and the end-to-end tests (`tests/common`, which include this file
//! by path), so both isolate their data the same way.
#![allow(unreachable_pub, dead_code)]

use std::io::Write as _;

use sqlx::Connection as _;

/// The variable naming the PostgreSQL server tests may use.
pub const POSTGRES_ENV: &str = "NIGHTJAR_TEST_POSTGRES_URL";

/// A schema named `t_<16 hex digits>`; dropped with everything in it by
/// [`Schema::drop_blocking`].
#[derive(Debug)]
pub struct Schema {
    base: String,
    /// The schema's name (also the `application_name` of its connections).
    pub name: String,
    /// A database URL whose connections use only this schema.
    pub url: String,
}

impl Schema {
    /// Creates a schema on the server named by [`POSTGRES_ENV`], or `None` when it is unset
    /// or empty.
    pub async fn create_if_configured() -> Option<Self> {
        let base = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty())?;
        let mut random = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
        let name = format!(
            "t_{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        // The application name lets the drop end this schema's sessions first.
        let url =
            format!("{base}{separator}options=-c%20search_path%3D{name}&application_name={name}");
        Some(Self { base, name, url })
    }

    /// Drops the schema and everything in it, from a thread and runtime of its own so that it
    /// works inside a test's runtime and in `Drop`.
    pub fn drop_blocking(&self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
                // A server still running (its runtime may be blocked on this drop) could hold
                // locks in the schema: end its sessions first.
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&mut conn)
                .await;
                let _ = sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await;
                let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await
                {
                    let _ = writeln!(std::io::stderr(), "could not drop test schema {name}: {e}");
                }
                let _ = conn.close().await;
            });
        })
        .join();
    }
}
