//! The fault switch: makes the RPC answer with an HTTP error, never answer, or accept
//! transactions and then drop them, so clients can prove they survive a misbehaving node.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer every JSON-RPC request with this HTTP status (e.g. 500, 502, 503, 429) and no body.
    HttpError { status: u16 },
    /// Accept the connection and never answer.
    NoAnswer,
    /// Answer transaction submissions as if accepted (the hash for `broadcast_tx_async`, a
    /// timeout for waiting calls), but never include the transaction. Other methods work.
    DropTransactions,
    /// Include submitted transactions, but never answer a submission or a transaction-status query
    /// (`tx`, `EXPERIMENTAL_tx_status`): the sender cannot learn that its transaction landed. Other
    /// methods work.
    LoseAnswers,
}

/// What a request does, for the faults that apply to some requests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `send_tx`, `broadcast_tx_async`, `broadcast_tx_commit`.
    Submit,
    /// `tx`, `EXPERIMENTAL_tx_status`.
    TxStatus,
    Other,
}

impl RequestKind {
    pub fn of(method: &str) -> Self {
        match method {
            "send_tx" | "broadcast_tx_async" | "broadcast_tx_commit" => Self::Submit,
            "tx" | "EXPERIMENTAL_tx_status" => Self::TxStatus,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultState {
    pub fault: Fault,
    /// How many more requests it applies to; `None` until cleared.
    pub remaining: Option<u64>,
}

/// Shared between the server and whoever drives the test (a lib handle or the admin endpoint).
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    state: Arc<Mutex<Option<FaultState>>>,
}

impl FaultSwitch {
    /// Applies `fault` to every request until cleared.
    pub fn set(&self, fault: Fault) {
        self.replace(Some(FaultState {
            fault,
            remaining: None,
        }));
    }

    /// Applies `fault` to the next `requests` requests the fault concerns.
    pub fn set_for(&self, fault: Fault, requests: u64) {
        self.replace(Some(FaultState {
            fault,
            remaining: Some(requests),
        }));
    }

    pub fn clear(&self) {
        self.replace(None);
    }

    pub fn current(&self) -> Option<FaultState> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replace(&self, state: Option<FaultState>) {
        tracing::info!(?state, "fault switch");
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// The fault to apply to a request of `kind`, counting it against a limited fault.
    pub fn take(&self, kind: RequestKind) -> Option<Fault> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = (*guard)?;
        let applies = match state.fault {
            Fault::DropTransactions => kind == RequestKind::Submit,
            Fault::LoseAnswers => kind != RequestKind::Other,
            Fault::HttpError { .. } | Fault::NoAnswer => true,
        };
        if !applies {
            return None;
        }
        match state.remaining {
            None => {}
            Some(0) => {
                *guard = None;
                return None;
            }
            Some(n) => {
                let remaining = n - 1;
                *guard = (remaining > 0).then_some(FaultState {
                    fault: state.fault,
                    remaining: Some(remaining),
                });
            }
        }
        Some(state.fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_answers_concern_transactions_only() {
        let switch = FaultSwitch::default();
        switch.set(Fault::LoseAnswers);
        assert_eq!(switch.take(RequestKind::Other), None);
        assert_eq!(switch.take(RequestKind::Submit), Some(Fault::LoseAnswers));
        assert_eq!(switch.take(RequestKind::TxStatus), Some(Fault::LoseAnswers));
        assert_eq!(RequestKind::of("tx"), RequestKind::TxStatus);
        assert_eq!(RequestKind::of("send_tx"), RequestKind::Submit);
        assert_eq!(RequestKind::of("query"), RequestKind::Other);
    }

    #[test]
    fn a_limited_fault_applies_to_that_many_requests_then_clears() {
        let switch = FaultSwitch::default();
        assert_eq!(switch.take(RequestKind::Other), None);
        switch.set_for(Fault::HttpError { status: 503 }, 2);
        assert_eq!(
            switch.take(RequestKind::Other),
            Some(Fault::HttpError { status: 503 })
        );
        assert_eq!(
            switch.take(RequestKind::Submit),
            Some(Fault::HttpError { status: 503 })
        );
        assert_eq!(switch.take(RequestKind::Other), None);
        assert_eq!(switch.current(), None);
    }

    #[test]
    fn dropping_transactions_leaves_other_requests_alone_and_counts_only_submissions() {
        let switch = FaultSwitch::default();
        switch.set_for(Fault::DropTransactions, 1);
        assert_eq!(
            switch.take(RequestKind::Other),
            None,
            "a query is not a submission"
        );
        assert_eq!(
            switch.take(RequestKind::Submit),
            Some(Fault::DropTransactions)
        );
        assert_eq!(switch.take(RequestKind::Submit), None);
    }

    #[test]
    fn an_unlimited_fault_stays_until_cleared() {
        let switch = FaultSwitch::default();
        switch.set(Fault::NoAnswer);
        for _ in 0..5 {
            assert_eq!(switch.take(RequestKind::Other), Some(Fault::NoAnswer));
        }
        switch.clear();
        assert_eq!(switch.take(RequestKind::Other), None);
    }
}
