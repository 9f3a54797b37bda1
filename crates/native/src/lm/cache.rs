//! The LM cache: answers by a content-addressed key over the request (never the API key or the
//! base URL). A bounded in-memory layer shared by every LM of the process with the same cache
//! path, over an optional SQLite file shared by every process that opens it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::LmError;

/// Bytes the in-memory layer keeps at most (least recently used answers leave first).
const MEMORY_BYTES: u64 = 256 << 20;
/// Keys per `IN (...)` query when a batch looks its answers up on disk.
const DISK_CHUNK: usize = 4000;

/// The key of a request: SHA-256 over its canonical JSON (object keys sorted), written straight
/// into the hash.
pub fn key(kind: &str, body: &Value, rollout_id: Option<&str>) -> String {
    // the fields in sorted order: the same bytes as the JSON object {"body", "kind", "rollout_id"}
    #[derive(serde::Serialize)]
    struct Keyed<'a> {
        body: &'a Value,
        kind: &'a str,
        rollout_id: Option<&'a str>,
    }
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    // writing JSON into a hash cannot fail: Value keys are strings and the writer never errs
    let _ = serde_json::to_writer(
        &mut h,
        &Keyed {
            body,
            kind,
            rollout_id,
        },
    );
    let digest = h.0.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// One cache (memory, and disk when it has a path).
pub struct LmCache {
    memory: moka::future::Cache<String, Arc<str>>,
    disk: Option<SqlitePool>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for LmCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmCache")
            .field("path", &self.path)
            .field("entries", &self.memory.entry_count())
            .finish()
    }
}

static OPEN: Mutex<Option<HashMap<Option<PathBuf>, Weak<LmCache>>>> = Mutex::new(None);

fn cache_error(path: &Path, e: impl std::fmt::Display) -> LmError {
    LmError::Cache(format!("LM cache {}: {e}", path.display()))
}

/// Opens the SQLite file of a cache (creating it and its table).
pub async fn open_disk(path: &Path) -> Result<SqlitePool, LmError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| cache_error(path, e))?;
    }
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .map_err(|e| cache_error(path, e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| cache_error(path, e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS lm_cache (key TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, \
         value TEXT NOT NULL, created_at REAL NOT NULL)",
    )
    .execute(&pool)
    .await
    .map_err(|e| cache_error(path, e))?;
    Ok(pool)
}

impl LmCache {
    /// The cache of `path` (memory only for `None`), shared with every other LM of the process
    /// that uses the same path.
    pub async fn shared(path: Option<&Path>) -> Result<Arc<LmCache>, LmError> {
        let path = path.map(Path::to_path_buf);
        if let Some(c) = OPEN
            .lock()
            .get_or_insert_with(HashMap::new)
            .get(&path)
            .and_then(Weak::upgrade)
        {
            return Ok(c);
        }
        let disk = match &path {
            Some(p) => Some(open_disk(p).await?),
            None => None,
        };
        let memory = moka::future::Cache::builder()
            .max_capacity(MEMORY_BYTES)
            .weigher(|k: &String, v: &Arc<str>| (k.len() + v.len()).min(u32::MAX as usize) as u32)
            .build();
        let cache = Arc::new(LmCache {
            memory,
            disk,
            path: path.clone(),
        });
        let mut open = OPEN.lock();
        let map = open.get_or_insert_with(HashMap::new);
        // another caller may have opened it meanwhile: keep the first
        if let Some(c) = map.get(&path).and_then(Weak::upgrade) {
            return Ok(c);
        }
        map.insert(path, Arc::downgrade(&cache));
        Ok(cache)
    }

    /// The in-memory layer.
    pub fn memory(&self) -> &moka::future::Cache<String, Arc<str>> {
        &self.memory
    }

    /// An answer from the disk layer.
    pub async fn disk_get(&self, key: &str) -> Result<Option<Arc<str>>, LmError> {
        let (Some(pool), Some(path)) = (&self.disk, &self.path) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT value FROM lm_cache WHERE key = ?")
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(|e| cache_error(path, e))?;
        Ok(row.map(|r| Arc::<str>::from(r.get::<String, _>(0))))
    }

    /// Stores an answer on disk (the memory layer stores it by itself).
    pub async fn disk_put(
        &self,
        key: &str,
        kind: &str,
        model: &str,
        value: &str,
    ) -> Result<(), LmError> {
        let (Some(pool), Some(path)) = (&self.disk, &self.path) else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        sqlx::query("INSERT OR REPLACE INTO lm_cache (key, kind, model, value, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(key)
            .bind(kind)
            .bind(model)
            .bind(value)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| cache_error(path, e))?;
        Ok(())
    }

    /// The cached answers of `keys`, in order: from memory, then, for those not in memory, from
    /// the disk in one query per few thousand keys (each found one is kept in memory too).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Arc<str>>>, LmError> {
        let mut found = Vec::with_capacity(keys.len());
        let mut missing: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let hit = self.memory.get(k).await;
            if hit.is_none() {
                missing.entry(k.as_str()).or_default().push(i);
            }
            found.push(hit);
        }
        let (Some(pool), Some(path)) = (&self.disk, &self.path) else {
            return Ok(found);
        };
        let wanted: Vec<&str> = missing.keys().copied().collect();
        for chunk in wanted.chunks(DISK_CHUNK) {
            // one row holding every answer found, as key + value records split by the ASCII record
            // separator: a stored value is JSON text, which never holds a raw control character,
            // and a key is 64 hex digits (one row is read much faster than one row per answer)
            let sql = format!(
                "SELECT group_concat(key || value, char(30)) FROM lm_cache WHERE key IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            // only "?" placeholders are formatted in; the keys are bound
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for k in chunk {
                q = q.bind(*k);
            }
            let row = q.fetch_one(pool).await.map_err(|e| cache_error(path, e))?;
            let all: Option<String> = row.try_get(0).map_err(|e| cache_error(path, e))?;
            for record in all.as_deref().unwrap_or_default().split('\u{1e}') {
                let (Some(key), Some(value)) = (record.get(..64), record.get(64..)) else {
                    continue;
                };
                let value: Arc<str> = Arc::from(value);
                for &i in missing.get(key).into_iter().flatten() {
                    found[i] = Some(value.clone());
                }
                self.memory.insert(key.to_string(), value).await;
            }
        }
        Ok(found)
    }
}

/// Entries, bytes and models of a cache file (`dspex cache stats`).
pub async fn disk_stats(path: &Path) -> Result<Value, LmError> {
    let pool = open_disk(path).await?;
    let rows = sqlx::query("SELECT kind, model, COUNT(*), SUM(LENGTH(value)) FROM lm_cache GROUP BY kind, model ORDER BY kind, model")
        .fetch_all(&pool)
        .await
        .map_err(|e| cache_error(path, e))?;
    let mut entries = 0i64;
    let mut bytes = 0i64;
    let mut by = Vec::new();
    for r in rows {
        let (n, b): (i64, i64) = (r.get(2), r.get::<Option<i64>, _>(3).unwrap_or(0));
        entries += n;
        bytes += b;
        by.push(json!({"kind": r.get::<String, _>(0), "model": r.get::<String, _>(1), "entries": n, "bytes": b}));
    }
    pool.close().await;
    Ok(
        json!({"path": path.display().to_string(), "entries": entries, "bytes": bytes, "by_model": by}),
    )
}

/// Every entry as JSON lines (`{"key","kind","model","value","created_at"}`).
pub async fn disk_export(path: &Path, out: &mut dyn std::io::Write) -> Result<u64, LmError> {
    let pool = open_disk(path).await?;
    let rows =
        sqlx::query("SELECT key, kind, model, value, created_at FROM lm_cache ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .map_err(|e| cache_error(path, e))?;
    let mut n = 0;
    for r in rows {
        let line = json!({"key": r.get::<String, _>(0), "kind": r.get::<String, _>(1), "model": r.get::<String, _>(2),
                          "value": r.get::<String, _>(3), "created_at": r.get::<f64, _>(4)});
        writeln!(out, "{line}").map_err(|e| cache_error(path, e))?;
        n += 1;
    }
    pool.close().await;
    Ok(n)
}

/// Adds the entries of an export (existing keys are replaced); a bad line is an error naming it.
pub async fn disk_import(path: &Path, input: &str) -> Result<u64, LmError> {
    let mut parsed = Vec::new();
    for (i, line) in input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| cache_error(path, format!("import line {}: {e}", i + 1)))?;
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    cache_error(
                        path,
                        format!("import line {}: no string field {name:?}", i + 1),
                    )
                })
        };
        parsed.push((
            field("key")?,
            field("kind")?,
            field("model")?,
            field("value")?,
            v.get("created_at").and_then(Value::as_f64).unwrap_or(0.0),
        ));
    }
    let pool = open_disk(path).await?;
    let mut tx = pool.begin().await.map_err(|e| cache_error(path, e))?;
    for (k, kind, model, value, at) in &parsed {
        sqlx::query("INSERT OR REPLACE INTO lm_cache (key, kind, model, value, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(k)
            .bind(kind)
            .bind(model)
            .bind(value)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| cache_error(path, e))?;
    }
    tx.commit().await.map_err(|e| cache_error(path, e))?;
    pool.close().await;
    Ok(parsed.len() as u64)
}

/// Deletes every entry (of one model when given); returns how many.
pub async fn disk_clear(path: &Path, model: Option<&str>) -> Result<u64, LmError> {
    let pool = open_disk(path).await?;
    let q = match model {
        Some(m) => sqlx::query("DELETE FROM lm_cache WHERE model = ?").bind(m.to_string()),
        None => sqlx::query("DELETE FROM lm_cache"),
    };
    let n = q
        .execute(&pool)
        .await
        .map_err(|e| cache_error(path, e))?
        .rows_affected();
    pool.close().await;
    Ok(n)
}
