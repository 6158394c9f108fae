//! A transaction's progress and final outcome in nearcore's views.

use near_primitives::hash::CryptoHash;
use near_primitives::types::AccountId;
use near_primitives::views::{
    ExecutionOutcomeWithIdView, ExecutionStatusView, FinalExecutionOutcomeView,
    FinalExecutionOutcomeViewEnum, FinalExecutionOutcomeWithReceiptView, FinalExecutionStatus,
    SignedTransactionView, TxExecutionStatus,
};

use super::Chain;

/// How far a transaction got. Blocks are final as soon as they are produced here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxProgress {
    /// Accepted, waiting for the next block.
    Accepted,
    /// In a block; some of its receipts have not run yet.
    Included,
    /// It and every receipt it caused have run.
    Executed,
}

impl TxProgress {
    pub fn execution_status(self) -> TxExecutionStatus {
        match self {
            TxProgress::Accepted => TxExecutionStatus::None,
            TxProgress::Included => TxExecutionStatus::IncludedFinal,
            TxProgress::Executed => TxExecutionStatus::Final,
        }
    }

    /// Whether a caller waiting for `wanted` can be answered.
    pub fn satisfies(self, wanted: &TxExecutionStatus) -> bool {
        match wanted {
            TxExecutionStatus::None => true,
            TxExecutionStatus::Included | TxExecutionStatus::IncludedFinal => {
                self >= TxProgress::Included
            }
            TxExecutionStatus::ExecutedOptimistic
            | TxExecutionStatus::Executed
            | TxExecutionStatus::Final => self == TxProgress::Executed,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TxStatusView {
    pub progress: TxProgress,
    /// Present once the transaction is in a block.
    pub outcome: Option<FinalExecutionOutcomeViewEnum>,
}

impl Chain {
    /// The status of `tx_hash` signed by `sender`; `None` when the chain never accepted it.
    pub fn tx_status(
        &self,
        tx_hash: &CryptoHash,
        sender: &AccountId,
        with_receipts: bool,
    ) -> Option<TxStatusView> {
        let record = self.txs.get(tx_hash)?;
        if record.tx.transaction.signer_id() != sender {
            return None;
        }
        let Some(tx_outcome) = record.outcome.clone() else {
            return Some(TxStatusView {
                progress: TxProgress::Accepted,
                outcome: None,
            });
        };
        let mut receipts_outcome = Vec::new();
        let mut receipts = Vec::new();
        let mut complete = true;
        for receipt_id in &record.receipt_ids {
            let Some(receipt) = self.receipts.get(receipt_id) else {
                continue;
            };
            match &receipt.outcome {
                Some(outcome) => receipts_outcome.push(outcome.clone()),
                None => complete = false,
            }
            if with_receipts {
                receipts.push(receipt.receipt.view());
            }
        }
        let progress = if complete {
            TxProgress::Executed
        } else {
            TxProgress::Included
        };
        let status = final_status(tx_hash, &tx_outcome, &receipts_outcome);
        let final_outcome = FinalExecutionOutcomeView {
            status,
            transaction: SignedTransactionView::from(record.tx.clone()),
            transaction_outcome: tx_outcome,
            receipts_outcome,
        };
        let outcome = if with_receipts {
            FinalExecutionOutcomeViewEnum::FinalExecutionOutcomeWithReceipt(
                FinalExecutionOutcomeWithReceiptView {
                    final_outcome,
                    receipts,
                },
            )
        } else {
            FinalExecutionOutcomeViewEnum::FinalExecutionOutcome(final_outcome)
        };
        Some(TxStatusView {
            progress,
            outcome: Some(outcome),
        })
    }
}

/// nearcore's `get_final_transaction_result`: follow the chain of returned receipts from the
/// transaction to the value (or failure) that ends it; `Started` while a link has not run.
fn final_status(
    tx_hash: &CryptoHash,
    tx_outcome: &ExecutionOutcomeWithIdView,
    receipts_outcome: &[ExecutionOutcomeWithIdView],
) -> FinalExecutionStatus {
    let mut looking_for = *tx_hash;
    for outcome in std::iter::once(tx_outcome).chain(receipts_outcome) {
        if outcome.id != looking_for {
            continue;
        }
        match &outcome.outcome.status {
            ExecutionStatusView::Unknown => return FinalExecutionStatus::Started,
            ExecutionStatusView::Failure(error) => {
                return FinalExecutionStatus::Failure(error.clone());
            }
            ExecutionStatusView::SuccessValue(value) => {
                return FinalExecutionStatus::SuccessValue(value.clone());
            }
            ExecutionStatusView::SuccessReceiptId(id) => looking_for = *id,
        }
    }
    FinalExecutionStatus::Started
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_execution_needs_every_receipt_but_inclusion_does_not() {
        use TxExecutionStatus as S;
        assert!(TxProgress::Accepted.satisfies(&S::None));
        assert!(!TxProgress::Accepted.satisfies(&S::Included));
        assert!(TxProgress::Included.satisfies(&S::IncludedFinal));
        assert!(!TxProgress::Included.satisfies(&S::ExecutedOptimistic));
        assert!(!TxProgress::Included.satisfies(&S::Final));
        assert!(TxProgress::Executed.satisfies(&S::Final));
        assert_eq!(TxProgress::Executed.execution_status(), S::Final);
    }
}
