//! Helpers shared by the engine's integration tests.

/// The PostgreSQL URL of the test cluster (`DSPEX_TEST_PG_URL`, set by scripts/test.sh), or
/// None with a note; under CI=true a missing URL fails the test instead of skipping it.
pub fn pg_url() -> Option<String> {
    match std::env::var("DSPEX_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but DSPEX_TEST_PG_URL is not set: PostgreSQL tests must run in CI");
            }
            eprintln!("DSPEX_TEST_PG_URL not set: PostgreSQL test skipped");
            None
        }
    }
}
