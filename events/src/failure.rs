//! What a PostgreSQL failure means for the caller: an outage to retry, data the database
//! refuses, or a fault of the service.

use tokio_postgres::error::SqlState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is unreachable, restarting, overloaded or timed out: retry later (503).
    Unavailable,
    /// The database refused the data (SQLSTATE class 22, data exception, or 23, integrity
    /// constraint violation): the same request will fail again (4xx).
    Rejected,
    /// Anything else: a statement or a row the service should never have produced (500).
    Internal,
}

/// Classifies a `tokio_postgres` error by its SQLSTATE, or by what failed underneath.
pub fn classify(error: &tokio_postgres::Error) -> Failure {
    if let Some(db) = error.as_db_error() {
        return classify_state(db.code());
    }
    if error.is_closed() {
        return Failure::Unavailable;
    }
    // No SQLSTATE: the connection failed (I/O, a timeout, the server went away) or a column
    // could not be converted (a fault of ours).
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return Failure::Unavailable;
        }
        source = cause.source();
    }
    let text = error.to_string();
    if text.contains("timed out") || text.contains("connection") {
        Failure::Unavailable
    } else {
        Failure::Internal
    }
}

/// Classifies an error that came with a SQLSTATE.
pub fn classify_state(state: &SqlState) -> Failure {
    let code = state.code();
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    if transient.contains(state)
        // 08: connection exception, 53: insufficient resources, 57: operator intervention,
        // 58: system error (e.g. I/O), XX: internal error of the server.
        || ["08", "53", "57", "58"].iter().any(|class| code.starts_with(class))
    {
        Failure::Unavailable
    } else if code.starts_with("22") || code.starts_with("23") {
        Failure::Rejected
    } else {
        Failure::Internal
    }
}

/// The server's message (and detail) when there is one, the error's own text otherwise.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}; {detail})", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => error.to_string(),
    }
}

/// Classifies a failure to get a pooled connection.
pub fn classify_pool(error: &deadpool_postgres::PoolError) -> Failure {
    match error {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        _ => Failure::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_apart_from_bad_data_and_from_a_fault_of_ours() {
        assert_eq!(
            classify_state(&SqlState::ADMIN_SHUTDOWN),
            Failure::Unavailable
        );
        assert_eq!(
            classify_state(&SqlState::LOCK_NOT_AVAILABLE),
            Failure::Unavailable
        );
        assert_eq!(
            classify_state(&SqlState::CONNECTION_FAILURE),
            Failure::Unavailable
        );
        assert_eq!(
            classify_state(&SqlState::TOO_MANY_CONNECTIONS),
            Failure::Unavailable
        );
        // A NUL character in text, or \u0000 in jsonb.
        assert_eq!(
            classify_state(&SqlState::CHARACTER_NOT_IN_REPERTOIRE),
            Failure::Rejected
        );
        assert_eq!(
            classify_state(&SqlState::UNTRANSLATABLE_CHARACTER),
            Failure::Rejected
        );
        assert_eq!(
            classify_state(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
            Failure::Rejected
        );
        assert_eq!(
            classify_state(&SqlState::UNIQUE_VIOLATION),
            Failure::Rejected
        );
        assert_eq!(classify_state(&SqlState::SYNTAX_ERROR), Failure::Internal);
        assert_eq!(
            classify_state(&SqlState::UNDEFINED_TABLE),
            Failure::Internal
        );
    }
}
